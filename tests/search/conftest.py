from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from bwbpf.search.cli import main

Runner = Callable[..., tuple[int, str, str]]

# Small, fast trials on the synthetic set: 400 of its training images, 2 epochs, a one-point
# BP sweep, no confirmation over seeds (test_confirm turns it on), the paper's and the uniform
# references only (test_references trains the published designs). Later flags win.
FAST_SUBSET = 400
FAST = ["--dataset", "synthetic", "--train-subset", str(FAST_SUBSET), "--epochs", "2",
        "--batch-size", "64", "--device", "cpu", "--bp-lrs", "0.05", "--heartbeat", "5",
        "--confirm-top", "0", "--references", "paper,uniform"]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Runner:
    """Runs ``main(argv)``; returns (exit status, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"
