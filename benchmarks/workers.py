"""Trials per hour with 1 and 2 worker processes on one PostgreSQL study (this machine's
cores shared out), and the storage's time per trial as a fraction of the trial's time.

    .venv/bin/python benchmarks/workers.py [--tiny]

--tiny runs the same path on two trials of synthetic data (its figures mean nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from common import Row, show

from bwbpf.search.cli import main as cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pgserver import PostgresServer  # noqa: E402

N_TRIALS = 8
# trial throughput only: every trial trains to the end, nothing is confirmed
SEARCH = ["--no-download", "--sampler", "random", "--pruner", "none", "--no-baselines",
          "--device", "cpu", "--confirm-top", "0"]
DATA = {False: ["--dataset", "fashion-mnist", "--train-subset", "2000", "--val-size", "500",
                "--epochs", "2"],
        True: ["--dataset", "synthetic", "--train-subset", "64", "--val-size", "32",
               "--epochs", "1", "--width", "0.125"]}  # --tiny: the path, not the figures


class Clock:
    """Seconds the main thread spends in instrumented calls (outermost calls only: no double
    counting; the heartbeat thread's writes run beside training and are left out)."""

    def __init__(self) -> None:
        self.seconds, self.depth = 0.0, 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)
            self.depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds += time.perf_counter() - start

        return timed


def instrument(clock: Clock) -> None:
    """Times every public storage call and every sampler entry point, in this process."""
    storage = optuna.storages.RDBStorage
    for name in dir(optuna.storages.BaseStorage):
        if not name.startswith("_") and callable(getattr(storage, name)):
            setattr(storage, name, clock.wrap(getattr(storage, name)))
    for cls in (optuna.samplers.TPESampler, optuna.samplers.RandomSampler):
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent",
                     "before_trial", "after_trial"):
            setattr(cls, name, clock.wrap(getattr(cls, name)))


def rate(url: str, name: str) -> tuple[float, float]:
    """(trials per hour from the first start to the last finish, mean trial seconds)."""
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    durations = [t.duration.total_seconds() for t in trials if t.duration]
    return len(trials) / ((end - start).total_seconds() / 3600), sum(durations) / len(durations)


def run(tiny: bool = False) -> list[Row]:
    n = 2 if tiny else N_TRIALS
    flag = dict(zip(DATA[tiny][::2], DATA[tiny][1::2]))
    what = f"{n} trials of {flag['--epochs']} epochs on {flag['--train-subset']} images"
    pg = PostgresServer()
    try:
        def study(name: str, *extra: str) -> list[str]:
            return ["-q", "run", "--storage", pg.url, "--study", name, "--n-trials", str(n),
                    *SEARCH, *DATA[tiny], *extra]

        clock = Clock()
        instrument(clock)
        # one worker, in this process (instrumented), torch's default threads
        assert cli(study("one")) == 0, "the one-worker study failed"
        one, trial_s = rate(pg.url, "one")
        storage_s = clock.seconds
        # The same trials for the two workers: queue the first study's parameters.
        two_study = optuna.create_study(study_name="two", storage=pg.url, direction="maximize")
        for t in optuna.load_study(study_name="one", storage=pg.url).get_trials():
            two_study.enqueue_trial(t.params)
        subprocess.run([sys.executable, "-m", "bwbpf.search", *study("two", "--jobs", "2")],
                       check=True, capture_output=True, env={**os.environ})
        two, _ = rate(pg.url, "two")
    finally:
        pg.close()
    return [
        Row("trials/hour: 2 workers / 1 worker (PostgreSQL, 2 cores)", two / one, ">= 1.0",
            f"{two:.0f} vs {one:.0f} trials/h; {what}"),
        Row("storage time per trial / trial time (PostgreSQL, 1 worker)",
            storage_s / (trial_s * n), "< 0.02",
            f"{storage_s / n * 1000:.0f} ms of {trial_s:.1f} s per trial"),
    ]


if __name__ == "__main__":
    show(run(tiny="--tiny" in sys.argv[1:]))
