"""A config re-trained over seeds, at the trial budget or a promoted fidelity: the record
``study_attrs`` stores under its keys, read through the typed readers (``attr_readers``)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Any

from bwbpf.reports.attr_readers import Stored, accuracies, count, items

Fidelity = tuple[int, int]  # (epochs, training images; 0: all of them)


def fidelity_level(f: Fidelity | None) -> tuple[float, ...]:
    """How much training a fidelity is, as a total order: epochs x images first (all images
    count as more than any subset), then epochs, then images; the search's own budget (None)
    is the least."""
    if f is None:
        return (0.0,)
    images = f[1] or math.inf
    return (f[0] * images, float(f[0]), images)


def fidelity_shown(f: Fidelity) -> str:
    return f"{f[0]} epoch{'s' if f[0] != 1 else ''} on {f[1] or 'all'} images"


@dataclass(frozen=True)
class Confirmation:
    """A decoupling (or end-to-end BP: ``trial`` None) trained at the trial budget over several
    seeds. The first seed is the search's own (the single-seed result), so the mean is over
    every training of the same config, and a lucky seed is averaged rather than dropped."""

    trial: int | None
    seeds: tuple[int, ...]
    accuracy: tuple[float, ...]  # validation accuracy at the last epoch, one per seed
    fidelity: Fidelity | None = None  # None: the trial budget; else promoted (PROMOTED)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracy)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1: the seeds are a sample of all seeds); 0 for one."""
        return statistics.stdev(self.accuracy) if len(self.accuracy) > 1 else 0.0

    def with_seed(self, seed: int, accuracy: float) -> Confirmation:
        return replace(self, seeds=(*self.seeds, seed), accuracy=(*self.accuracy, accuracy))

    def shown(self) -> str:
        at = "" if self.fidelity is None else f" at {fidelity_shown(self.fidelity)}"
        if len(self.seeds) == 1:
            return f"{self.mean:.4f}{at} (1 seed)"
        return f"{self.mean:.4f} ± {self.std:.4f} over {len(self.seeds)} seeds{at}"

    def stored(self) -> dict[str, list[Any]]:
        return {"seeds": list(self.seeds), "val_accuracy": list(self.accuracy)}

    @classmethod
    def parse(cls, trial: int | None, raw: Any, fidelity: Fidelity | None = None,
              at: Stored | None = None) -> Confirmation | None:
        """The stored form read back, a seed or accuracy that is not one refused; None for an
        entry short of its lists, or at the trial budget a single seed (that is the search's
        result alone: nothing confirmed yet)."""
        if not isinstance(raw, dict):
            return None
        at = at or Stored(None, "confirmed")
        seeds, acc = raw.get("seeds"), raw.get("val_accuracy")
        if seeds is not None:
            seeds = [count(at.at("seeds").at(i), x, least=0)
                     for i, x in enumerate(items(at.at("seeds"), seeds, "seeds"))]
        if acc is not None:
            acc = accuracies(at.at("val_accuracy"), acc)
        least = 1 if fidelity is not None else 2
        if seeds is None or acc is None or len(seeds) != len(acc) or len(seeds) < least:
            return None
        return cls(trial, tuple(seeds), tuple(acc), fidelity)
