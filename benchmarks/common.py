"""Shared bits of the benchmark scripts: a result row, timing, printing."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bwbpf.spaces.files import write_text_atomic


def long_run_parser(doc: str | None, here: Path) -> argparse.ArgumentParser:
    """The options every long benchmark takes: --tiny (synthetic data, seconds), --out (the
    results folder; its caches go to OUT/out) and --threads (torch threads, one per job when
    two jobs share the machine)."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="synthetic data, a minute")
    ap.add_argument("--out", type=Path, default=here, help="results folder (default %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    return ap


def long_run_start(args: argparse.Namespace) -> Path:
    """Applies --threads and makes OUT/out, the caches' folder, which it returns."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = args.out / "out"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@dataclass
class Row:
    name: str
    measured: float
    target: str  # e.g. "<= 1.15"
    detail: str = ""

    @property
    def ok(self) -> bool:
        op, value = self.target.split()
        v = float(value)
        return {"<=": self.measured <= v, ">=": self.measured >= v, "<": self.measured < v,
                ">": self.measured > v}[op]

    def line(self) -> str:
        mark = "ok" if self.ok else "MISSED"
        return (f"{self.name:58s} {self.measured:8.3f}  target {self.target:8s} {mark}  "
                f"{self.detail}")


def best_time(fn: Callable[[], None], repeats: int = 5, warmup: int = 2) -> float:
    """Seconds of the fastest of ``repeats`` calls (after ``warmup``): the least noisy estimate
    on a shared machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times(fns: dict[str, Callable[[], None]], rounds: int = 7, warmup: int = 2
               ) -> dict[str, float]:
    """Fastest call of each function, the functions interleaved round by round so that a
    slow spell of the machine hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def machine() -> str:
    return f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"


def show(rows: list[Row]) -> None:
    for r in rows:
        print(r.line(), flush=True)


def show_pairs(rows: list[tuple[str, str]]) -> None:
    """(label, value) lines with the values in one column (the GPU checks' output)."""
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:{width}s}  {value}")


class Runs:
    """Finished trainings (and searches), kept in a JSON file as each one ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.data:
            self.data[key] = make()
            # Another process may share the file (two backbones at once): keep its entries.
            if self.path.exists():
                self.data = {**json.loads(self.path.read_text()), **self.data}
            write_text_atomic(self.path, json.dumps(self.data))
        return self.data[key]


def train_and_test(data: Any, d: Any, *, epochs: int, seed: int, batch: int,
                   augment: bool = False, lr_schedule: str = "cosine", detach: bool = True
                   ) -> dict[str, Any]:
    """One decoupling trained on ``data`` (CPU) and tested: the last epoch's validation
    accuracy, the test accuracy of the net and of every block through its head, the training
    seconds. What the long experiments keep for each training.

    A training whose loss turns non-finite is a result, not a crash (a learning rate too large
    for that decoupling; a search fails such a trial and goes on): its net is tested as the
    divergence left it, and the record says where it diverged under ``"diverged"``."""
    from bwbpf.spaces import build
    from bwbpf.trainers import NonFiniteLoss, TrainPlan, evaluate, fit

    net = build(d, data.num_classes, data.in_channels, data.image_size, seed=seed)
    plan = TrainPlan(epochs=epochs, batch_size=batch, seed=seed, device="cpu", augment=augment,
                     lr_schedule=lr_schedule, detach=detach)  # type: ignore[arg-type]
    started = time.perf_counter()
    try:
        r = fit(net, data, plan)
    except NonFiniteLoss as e:
        seconds = time.perf_counter() - started
        blocks = evaluate(net, data.test, plan)
        return {"val": evaluate(net, data.val, plan)[-1], "test": blocks[-1], "blocks": blocks,
                "seconds": seconds, "diverged": str(e)}
    blocks = evaluate(net, data.test, plan)
    return {"val": r.val_accuracy, "test": blocks[-1], "blocks": blocks,
            "seconds": r.train_seconds}
