"""TPE + Hyperband against random search without pruning, both under the same constraints
(speed-up over BP >= MIN_SPEEDUP, memory <= MAX_MEMORY) and the same trial budget, each
confirming its winners (the CONFIRM_TOP best trials trained CONFIRM_SEEDS more times), on
Fashion-MNIST with the small backbone: epochs spent, confirmation included (target: <= 0.6 of
random search's), and the confirmed best's mean validation accuracy (target: at least as good);
and the sampler + storage time per trial as a fraction of the trial's time (target < 2%).

Trials run 9 epochs, so that Hyperband (reduction factor 3, first rung at epoch 1) has its three
brackets with rungs at 1, 3 and 9 epochs; at 3-4 epochs per trial it has two brackets, one of
which never prunes, and saves about a third of the epochs. Each comparison is paired (same seed:
same data split, same initial weights) and repeated over SEEDS; the rows give the totals and the
mean difference, the detail each seed. Rejected samples (they break a constraint) are never
trained and spend no epochs.

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

from bwbpf.reports.record import ranked
from bwbpf.reports.study_attrs import confirmations
from bwbpf.search.runner import run_search
from bwbpf.search.settings import SearchSettings
from bwbpf.spaces import SearchSpace

N_TRIALS, EPOCHS, SUBSET, VAL, SEEDS = 12, 9, 600, 600, (0, 1)
# Loose enough for random sampling: at >= 2x and <= 0.6, 200 random samples in a row missed.
MIN_SPEEDUP, MAX_MEMORY, CONFIRM_TOP, CONFIRM_SEEDS = 1.5, 0.8, 2, 2


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
              ) -> tuple[int, float, float, str]:
    """(epochs spent, searching and confirming; the confirmed best's mean validation
    accuracy; wall seconds; what won)."""
    space = SearchSpace(backbones=("vgg8b",), width=0.25, min_speedup=MIN_SPEEDUP,
                        max_memory=MAX_MEMORY)
    s = SearchSettings(study=f"{name}-{seed}", storage=db, space=space,
                       dataset="fashion-mnist", download=False, train_subset=SUBSET,
                       val_size=VAL, epochs=EPOCHS, n_trials=N_TRIALS, sampler=sampler,
                       pruner=pruner, baselines=False, device="cpu", seed=seed, quiet=True,
                       confirm_top=CONFIRM_TOP, confirm_seeds=CONFIRM_SEEDS
                       )  # type: ignore[arg-type]
    start = time.perf_counter()
    study = run_search(s)
    wall = time.perf_counter() - start
    trials = study.get_trials()
    confirmed = confirmations(study)
    epochs = sum(len(t.user_attrs.get("curve", [])) for t in trials)
    epochs += sum((len(c.seeds) - 1) * EPOCHS for c in confirmed.values())
    best = ranked(study)[0]
    c = confirmed.get(best.number)
    if c is None:  # its confirmation failed (a non-finite loss): its single seed stands
        return epochs, best.values[0], wall, f"trial {best.number} {best.values[0]:.4f}"
    return epochs, c.mean, wall, (f"trial {best.number} {c.mean:.4f} over {len(c.seeds)} "
                                  f"seeds (single seed {best.values[0]:.4f})")


def run() -> list[Row]:
    clock = Clock()
    instrument(clock)
    runs: dict[str, list[tuple[int, float, str]]] = {"random": [], "tpe-hb": []}
    overhead = hb_wall = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        for seed in SEEDS:
            epochs, best, _, won = study_run(db, "random", "random", "none", seed)
            runs["random"].append((epochs, best, won))
            before = clock.seconds
            epochs, best, wall, won = study_run(db, "tpe-hb", "tpe", "hyperband", seed)
            overhead, hb_wall = overhead + clock.seconds - before, hb_wall + wall
            runs["tpe-hb"].append((epochs, best, won))
            for key, rows in runs.items():
                print(f"seed {seed} {key}: {rows[-1][0]} epochs, confirmed best {rows[-1][2]}",
                      flush=True)
    budget = (f"{N_TRIALS} trials x {EPOCHS} epochs, {SUBSET} images, vgg8b x0.25, "
              f">= {MIN_SPEEDUP:g}x, <= {MAX_MEMORY:g} memory, top {CONFIRM_TOP} confirmed "
              f"over {CONFIRM_SEEDS} more seeds, seeds {list(SEEDS)}")
    rows = []
    for key, label in (("tpe-hb", "TPE+Hyperband"),):
        spent = sum(e for e, _, _ in runs[key])
        base = sum(e for e, _, _ in runs["random"])
        gains = [b - rb for (_, b, _), (_, rb, _) in zip(runs[key], runs["random"])]
        per_seed = "; ".join(f"{b:.4f} vs {rb:.4f}"
                             for (_, b, _), (_, rb, _) in zip(runs[key], runs["random"]))
        rows += [
            Row(f"epochs (confirmation in): {label} / random, no pruning", spent / base,
                "<= 0.6", f"{spent} vs {base} epochs; {budget}" if key == "tpe-hb"
                else f"{spent} vs {base} epochs"),
            Row(f"confirmed best val accuracy: {label} - random (mean)",
                sum(gains) / len(gains), ">= 0.0", per_seed),
        ]
    rows.append(Row("sampler + storage time / trial time (TPE+Hyperband, SQLite)",
                    overhead / hb_wall, "< 0.02", f"{overhead:.2f} s of {hb_wall:.0f} s"))
    return rows


if __name__ == "__main__":
    show(run())
