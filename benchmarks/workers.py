"""Trials per hour with 1 and 2 worker processes on one PostgreSQL study (this machine's
cores shared out), and the storage's time per trial as a fraction of the trial's time.

    .venv/bin/python benchmarks/workers.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from common import Row, show
from search_efficiency import Clock, instrument

from bwbpf.search.runner import run_search
from bwbpf.search.settings import SearchSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pgserver import PostgresServer  # noqa: E402

N_TRIALS = 8
FLAGS = ["--dataset", "fashion-mnist", "--no-download", "--train-subset", "2000",
         "--val-size", "500", "--epochs", "2", "--n-trials", str(N_TRIALS), "--sampler",
         "random", "--pruner", "none", "--no-baselines", "--device", "cpu",
         "--confirm-top", "0"]


def rate(url: str, name: str) -> tuple[float, float]:
    """(trials per hour from the first start to the last finish, mean trial seconds)."""
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    durations = [t.duration.total_seconds() for t in trials if t.duration]
    return len(trials) / ((end - start).total_seconds() / 3600), sum(durations) / len(durations)


def run() -> list[Row]:
    pg = PostgresServer()
    try:
        clock = Clock()
        instrument(clock)
        s = SearchSettings(study="one", storage=pg.url, dataset="fashion-mnist", download=False,
                           train_subset=2000, val_size=500, epochs=2, n_trials=N_TRIALS,
                           sampler="random", pruner="none", baselines=False, device="cpu",
                           quiet=True, confirm_top=0)  # trial throughput only
        run_search(s)  # one worker, in this process (instrumented), torch's default threads
        one, trial_s = rate(pg.url, "one")
        storage_s = clock.seconds
        # The same trials for the two workers: queue the first study's parameters.
        two_study = optuna.create_study(study_name="two", storage=pg.url, direction="maximize")
        for t in optuna.load_study(study_name="one", storage=pg.url).get_trials():
            two_study.enqueue_trial(t.params)
        cmd = [sys.executable, "-m", "bwbpf.search", "-q", "run", "--storage", pg.url,
               "--study", "two", "--jobs", "2", *FLAGS]
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ})
        two, _ = rate(pg.url, "two")
    finally:
        pg.close()
    return [
        Row("trials/hour: 2 workers / 1 worker (PostgreSQL, 2 cores)", two / one, ">= 1.0",
            f"{two:.0f} vs {one:.0f} trials/h; {N_TRIALS} trials of 2 epochs on 2,000 images"),
        Row("storage time per trial / trial time (PostgreSQL, 1 worker)",
            storage_s / (trial_s * N_TRIALS), "< 0.02",
            f"{storage_s / N_TRIALS * 1000:.0f} ms of {trial_s:.1f} s per trial"),
    ]


if __name__ == "__main__":
    show(run())
