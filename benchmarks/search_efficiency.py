"""TPE + Hyperband against random search without pruning, same trial budget, on Fashion-MNIST
with the small backbone: epochs spent and best validation accuracy (target: >= 40% fewer epochs
for an equal or better best); and the sampler + storage time per trial as a fraction of the
trial's time (target < 2%).

Trials run 9 epochs, so that Hyperband (reduction factor 3, first rung at epoch 1) has its three
brackets with rungs at 1, 3 and 9 epochs; at 3-4 epochs per trial it has two brackets, one of
which never prunes, and saves about a third of the epochs. Each comparison is paired (same seed:
same data split, same initial weights) and repeated over SEEDS; the rows give the totals and the
mean difference, the detail each seed.

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

N_TRIALS, EPOCHS, SUBSET, VAL, SEEDS = 16, 9, 2000, 1000, (0, 1)


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


def study_run(db: str, name: str, sampler: str, pruner: str, seed: int
              ) -> tuple[int, float, float]:
    s = SearchSettings(study=f"{name}-{seed}", storage=db, dataset="fashion-mnist",
                       download=False, train_subset=SUBSET, val_size=VAL, epochs=EPOCHS,
                       n_trials=N_TRIALS, sampler=sampler, pruner=pruner, baselines=False,
                       device="cpu", seed=seed, quiet=True,  # type: ignore[arg-type]
                       confirm_top=0)  # the search's own epochs, as measured so far
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
    runs: dict[str, list[tuple[int, float]]] = {"random": [], "tpe-hb": [], "tpe-sha": []}
    overhead = hb_wall = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        for seed in SEEDS:
            epochs, best, _ = study_run(db, "random", "random", "none", seed)
            runs["random"].append((epochs, best))
            before = clock.seconds
            epochs, best, wall = study_run(db, "tpe-hb", "tpe", "hyperband", seed)
            overhead, hb_wall = overhead + clock.seconds - before, hb_wall + wall
            runs["tpe-hb"].append((epochs, best))
            epochs, best, _ = study_run(db, "tpe-sha", "tpe", "sha", seed)
            runs["tpe-sha"].append((epochs, best))
    budget = (f"{N_TRIALS} trials x {EPOCHS} epochs, {SUBSET} images, vgg8b x0.25, "
              f"seeds {list(SEEDS)}")
    rows = []
    for key, label in (("tpe-hb", "TPE+Hyperband"), ("tpe-sha", "TPE+SHA")):
        spent = sum(e for e, _ in runs[key])
        base = sum(e for e, _ in runs["random"])
        gains = [b - rb for (_, b), (_, rb) in zip(runs[key], runs["random"])]
        per_seed = "; ".join(f"{b:.4f} vs {rb:.4f}"
                             for (_, b), (_, rb) in zip(runs[key], runs["random"]))
        rows += [
            Row(f"epochs spent: {label} / random without pruning", spent / base, "<= 0.6",
                f"{spent} vs {base} epochs; {budget}" if key == "tpe-hb"
                else f"{spent} vs {base} epochs"),
            Row(f"best val accuracy: {label} - random (mean over seeds)",
                sum(gains) / len(gains), ">= 0.0", per_seed),
        ]
    rows.append(Row("sampler + storage time / trial time (TPE+Hyperband, SQLite)",
                    overhead / hb_wall, "< 0.02", f"{overhead:.2f} s of {hb_wall:.0f} s"))
    return rows


if __name__ == "__main__":
    show(run())
