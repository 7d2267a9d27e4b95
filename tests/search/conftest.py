from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
import sqlalchemy as sa

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


def until(condition: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    """Waits for ``condition``, polling, at most ``timeout`` seconds (then fails naming
    ``what``): a test waits on what it needs, never a fixed time."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def heartbeats_lapsed(url: str, grace: float) -> bool:
    """Every running trial's last heartbeat is more than ``grace`` seconds old, by the
    database's own clock, as Optuna judges a trial stale (its RDB tables, read directly)."""
    beat = sa.table("trial_heartbeats", sa.column("trial_id"), sa.column("heartbeat", sa.DateTime))
    trials = sa.table("trials", sa.column("trial_id"), sa.column("state"))
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            # naive, as Optuna compares them (PostgreSQL's clock answers with a time zone)
            now = c.execute(sa.select(sa.func.now())).scalar_one().replace(tzinfo=None)
            beats = c.execute(sa.select(beat.c.heartbeat).join(
                trials, trials.c.trial_id == beat.c.trial_id).where(
                sa.cast(trials.c.state, sa.String) == "RUNNING")).scalars().all()
    finally:
        engine.dispose()
    return all((now - b).total_seconds() > grace for b in beats)
