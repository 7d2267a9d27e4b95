"""TPE + Hyperband against random search without pruning, same trial budget, on Fashion-MNIST
with the small backbone: epochs spent and best validation accuracy (target: >= 40% fewer epochs
for an equal or better best); and the sampler + storage time per trial as a fraction of the
trial's time (target < 2%).

    .venv/bin/python benchmarks/search_efficiency.py
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from common import Row, show
from optuna.trial import TrialState

from bwbpf.search.runner import run_search
from bwbpf.search.settings import SearchSettings

N_TRIALS, EPOCHS, SUBSET, VAL = 12, 4, 3000, 1000


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


def study_run(db: str, name: str, sampler: str, pruner: str) -> tuple[int, float, float]:
    s = SearchSettings(study=name, storage=db, dataset="fashion-mnist", download=False,
                       train_subset=SUBSET, val_size=VAL, epochs=EPOCHS, n_trials=N_TRIALS,
                       sampler=sampler, pruner=pruner, baselines=False, device="cpu",
                       quiet=True)  # type: ignore[arg-type]
    start = time.perf_counter()
    study = run_search(s)
    wall = time.perf_counter() - start
    trials = study.get_trials()
    epochs = sum(len(t.user_attrs.get("curve", [])) for t in trials)
    best = max(t.value for t in trials if t.state == TrialState.COMPLETE)
    return epochs, best, wall


def run() -> list[Row]:
    clock = Clock()
    instrument(clock)
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        r_epochs, r_best, _ = study_run(db, "random", "random", "none")
        before = clock.seconds
        h_epochs, h_best, h_wall = study_run(db, "tpe-hb", "tpe", "hyperband")
        overhead = clock.seconds - before
        s_epochs, s_best, _ = study_run(db, "tpe-sha", "tpe", "sha")
    budget = f"{N_TRIALS} trials x {EPOCHS} epochs, {SUBSET} images, vgg8b x0.25"
    return [
        Row("epochs spent: TPE+Hyperband / random without pruning", h_epochs / r_epochs,
            "<= 0.6", f"{h_epochs} vs {r_epochs} epochs; {budget}"),
        Row("best val accuracy: TPE+Hyperband - random", h_best - r_best, ">= 0.0",
            f"{h_best:.4f} vs {r_best:.4f}"),
        Row("epochs spent: TPE+SHA / random without pruning", s_epochs / r_epochs, "<= 0.6",
            f"{s_epochs} vs {r_epochs} epochs"),
        Row("best val accuracy: TPE+SHA - random", s_best - r_best, ">= 0.0",
            f"{s_best:.4f} vs {r_best:.4f}"),
        Row("sampler + storage time / trial time (TPE+Hyperband, SQLite)", overhead / h_wall,
            "< 0.02", f"{overhead:.2f} s of {h_wall:.0f} s"),
    ]


if __name__ == "__main__":
    show(run())
