"""Bad input: exit status 2, one line naming what is wrong, and stored studies untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .conftest import FAST, Runner


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bwbpf.search.cli import main

    path = tmp_path_factory.mktemp("db") / "study.db"
    assert main(["-q", "run", "--storage", f"sqlite:///{path}", "--study", "keep",
                 "--n-trials", "2", "--no-baselines", *FAST]) == 0
    return path


CASES = [
    (["--sampler", "cmaes"], "argument --sampler: invalid choice: 'cmaes'"),
    (["--pruner", "asha"], "argument --pruner: invalid choice: 'asha'"),
    (["--backbone", "vgg99"], "unknown backbone 'vgg99'; valid: vgg8b"),
    (["--max-blocks", "9"], "max_blocks: 9 blocks of >= 1 unit(s) do not fit; vgg8b has 6"),
    (["--n-trials", "0"], "argument --n-trials: 0 must be >= 1"),
    (["--epochs", "two"], "argument --epochs: 'two' is not an integer"),
    (["--objectives", "speedup"], "--objectives 'speedup': accuracy first"),
    (["--heads", "conv,mlp"], "unknown aux head 'mlp'"),
    (["--min-epochs", "5"], "--min-epochs 5 exceeds --epochs 2"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
    (["--study", "x" * 600], "--study: a name of 1..512 printable characters"),
    (["--storage", "oracle://u:pw@host/db"], "unknown dialect 'oracle'"),
    (["--storage", "not a url"], "is not a storage URL"),
    (["--storage", "postgresql+psycopg://me:s3cret@127.0.0.1:1/db"], "cannot open storage"),
    (["--storage", "sqlite:////nonexistent-dir/x.db"], "folder /nonexistent-dir does not exist"),
]


@pytest.mark.parametrize(("flags", "message"), CASES, ids=[c[1][:30] for c in CASES])
def test_run_refuses_bad_input(cli: Runner, existing: Path, flags: list[str], message: str
                               ) -> None:
    before = hashlib.sha256(existing.read_bytes()).hexdigest()
    argv = ["run", "--storage", f"sqlite:///{existing}", "--study", "keep", "--n-trials", "3",
            *FAST, *flags]
    rc, out, err = cli(*argv)
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert "s3cret" not in err + out
    assert hashlib.sha256(existing.read_bytes()).hexdigest() == before


def test_other_settings_for_an_existing_study_are_refused(cli: Runner, existing: Path) -> None:
    before = existing.read_bytes()
    rc, _, err = cli("run", "--storage", f"sqlite:///{existing}", "--study", "keep",
                     *[a if a != "2" else "3" for a in FAST])
    assert rc == 2 and "was created with epochs=2; this run asks epochs=3" in err
    assert existing.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_never_touched(cli: Runner, tmp_path: Path) -> None:
    junk = tmp_path / "study.db"
    junk.write_bytes(b"\x00garbage" * 100)
    rc, _, err = cli("run", "--storage", f"sqlite:///{junk}", *FAST)
    assert rc == 2 and "is not an SQLite database; refusing to touch it" in err
    assert junk.read_bytes() == b"\x00garbage" * 100


def test_unknown_study_in_studies_command(cli: Runner, existing: Path) -> None:
    rc, out, _ = cli("studies", "--storage", f"sqlite:///{existing}")
    assert rc == 0 and out.startswith("keep: 2 complete")
