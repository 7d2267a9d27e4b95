from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from bwbpf.search.cli import main

FAST = ["--dataset", "synthetic", "--epochs", "2", "--batch-size", "64", "--device", "cpu",
        "--bp-lrs", "0.05"]


@pytest.fixture(scope="session")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file with a single- and a multi-objective study, both with pruned trials."""
    url = f"sqlite:///{tmp_path_factory.mktemp('reports') / 'study.db'}"
    for name, extra in (("so", []), ("mo", ["--objectives", "accuracy,speedup"])):
        assert main(["-q", "run", "--storage", url, "--study", name, "--n-trials", "7",
                     "--pruner", "median", "--pruner-startup", "3", *extra, *FAST]) == 0
    return url


@pytest.fixture(scope="session")
def so(db: str) -> optuna.Study:
    return optuna.load_study(study_name="so", storage=db)


@pytest.fixture(scope="session")
def mo(db: str) -> optuna.Study:
    return optuna.load_study(study_name="mo", storage=db)


@pytest.fixture(scope="session")
def report_file(db: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", "--storage", db, "--study", "so", "-o", str(out)]) == 0
    return out
