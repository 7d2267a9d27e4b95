"""Study attributes that `search` writes and `reports` reads: the run's settings, the BP
baselines and the confirmations over seeds (a finished trial's own attributes are read-only,
so they live with the study). The attribute names are stored in users' studies: they never
change.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, replace
from typing import Any, Iterator

import optuna

# Study user attributes.
SETTINGS = "settings"  # SearchSettings.record() of the run that created the study
BP_BASELINE = "bp_baseline"  # backbone -> the BP learning-rate sweep and its winner
CONFIRMED = "confirmed:"  # + a trial number: that trial re-trained over seeds (Confirmation)
BP_CONFIRMED = "confirmed"  # the same, inside a BP_BASELINE entry
# + "<epochs>x<images>:" + a trial number or "bp:<backbone>": trained at a higher fidelity than
# the search's (promotion), over the seeds done so far
PROMOTED = "promoted:"

Fidelity = tuple[int, int]  # (epochs, training images; 0: all of them)


def fidelity_key(f: Fidelity) -> str:
    return f"{PROMOTED}{f[0]}x{f[1]}:"


def fidelity_level(f: Fidelity | None) -> tuple[float, ...]:
    """How much training a fidelity is, as a total order: epochs x images first (all images
    count as more than any subset), then epochs, then images; the search's own budget (None)
    is the least."""
    if f is None:
        return (0.0,)
    images = f[1] or math.inf
    return (f[0] * images, float(f[0]), images)


def fidelity_shown(f: Fidelity) -> str:
    return f"{f[0]} epochs on {f[1] or 'all'} images"


def study_settings(study: optuna.Study) -> dict[str, Any]:
    return dict(study.user_attrs.get(SETTINGS) or {})


@dataclass(frozen=True)
class StoredRun:
    """The run settings a study was created with (SearchSettings.record()), as the reports
    read them: the one place their keys are spelled on this side. A study made before one was
    stored reads it as None."""

    dataset: str | None = None
    epochs: int | None = None
    train_subset: int | None = None
    objectives: tuple[str, ...] | None = None
    sampler: str | None = None
    pruner: str | None = None
    storage: str | None = None
    min_speedup: float | None = None
    max_memory: float | None = None
    cost_model: str | None = None
    batch_size: int | None = None

    @classmethod
    def of(cls, study: optuna.Study) -> StoredRun:
        raw = study_settings(study)
        stored = raw.get("space")
        space: dict[str, Any] = stored if isinstance(stored, dict) else {}
        objectives = raw.get("objectives")
        return cls(raw.get("dataset"), raw.get("epochs"), raw.get("train_subset"),
                   tuple(objectives) if objectives else None, raw.get("sampler"),
                   raw.get("pruner"), raw.get("storage"), space.get("min_speedup"),
                   space.get("max_memory"), raw.get("cost_model"), raw.get("batch_size"))

    def shown(self) -> list[tuple[str, Any]]:
        """(name, value) of the headline settings that are known, in the report's order."""
        rows = [("dataset", self.dataset), ("epochs", self.epochs),
                ("train_subset", self.train_subset),
                ("objectives", list(self.objectives) if self.objectives else None),
                ("sampler", self.sampler), ("pruner", self.pruner), ("storage", self.storage)]
        return [(k, v) for k, v in rows if v is not None]

    def constraints(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in (("min_speedup", self.min_speedup),
                                     ("max_memory", self.max_memory)) if v]


@dataclass(frozen=True)
class BPBaseline:
    """End-to-end BP on one backbone at the trial budget: the learning-rate sweep (one entry
    per rate: lr, val_accuracy, curve, train_seconds) and its winner, stored in the study's
    BP_BASELINE attribute under the backbone's name. Fields a study made by an older version
    lacks read as None or empty; keys this version does not know are kept as they were."""

    best_lr: float
    val_accuracy: float
    backbone: str | None = None
    width: float | None = None
    epochs: int | None = None
    weight_decay: float | None = None
    curve: tuple[float, ...] = ()
    sweep: tuple[dict[str, Any], ...] = ()
    confirmed: dict[str, Any] | None = None  # Confirmation.stored(), once confirmed
    other: tuple[tuple[str, Any], ...] = ()  # unknown stored keys, written back unchanged

    def stored(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.other)
        for name in _BP_KEYS:
            value = getattr(self, name)
            if value is not None and value != ():
                out[name] = list(value) if isinstance(value, tuple) else value
        if self.confirmed is not None:
            out[BP_CONFIRMED] = self.confirmed
        return out

    @classmethod
    def parse(cls, raw: Any) -> BPBaseline | None:
        """The stored entry read back; None when it lacks the winner's rate or accuracy."""
        if not isinstance(raw, dict) or "best_lr" not in raw or "val_accuracy" not in raw:
            return None
        known: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                                 for k, v in raw.items() if k in _BP_KEYS}
        other = tuple((k, v) for k, v in raw.items() if k not in _BP_KEYS and k != BP_CONFIRMED)
        return cls(**known, confirmed=raw.get(BP_CONFIRMED), other=other)

    def confirmation(self) -> Confirmation | None:
        return Confirmation.parse(None, self.confirmed)


_BP_KEYS = ("backbone", "width", "epochs", "weight_decay", "best_lr", "val_accuracy", "curve",
            "sweep")


def bp_baselines(study: optuna.Study) -> dict[str, BPBaseline]:
    """Backbone -> its BP baseline (entries that cannot be read are left out)."""
    raw = study.user_attrs.get(BP_BASELINE) or {}
    out = {b: BPBaseline.parse(v) for b, v in raw.items()} if isinstance(raw, dict) else {}
    return {b: v for b, v in out.items() if v is not None}


def save_bp_baseline(study: optuna.Study, backbone: str, bp: BPBaseline) -> None:
    """Stores ``bp`` under ``backbone``, keeping the other backbones' entries as stored."""
    raw = dict(study.user_attrs.get(BP_BASELINE) or {})
    raw[backbone] = bp.stored()
    study.set_user_attr(BP_BASELINE, raw)


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
    def parse(cls, trial: int | None, raw: Any, fidelity: Fidelity | None = None
              ) -> Confirmation | None:
        """The stored form read back; None for a malformed entry, or at the trial budget a
        single seed (that is the search's result alone: nothing confirmed yet)."""
        if not isinstance(raw, dict):
            return None
        seeds, acc = raw.get("seeds"), raw.get("val_accuracy")
        least = 1 if fidelity is not None else 2
        if not (isinstance(seeds, list) and isinstance(acc, list) and len(seeds) == len(acc)
                and len(seeds) >= least):
            return None
        return cls(trial, tuple(int(x) for x in seeds), tuple(float(x) for x in acc), fidelity)


def _promoted(study: optuna.Study) -> Iterator[tuple[str, Confirmation]]:
    """(what: a trial number or "bp:<backbone>", its record) of every promoted entry."""
    for key, raw in study.user_attrs.items():
        m = re.fullmatch(re.escape(PROMOTED) + r"(\d+)x(\d+):(\d+|bp:.+)", key)
        if m is None:
            continue
        fid = (int(m.group(1)), int(m.group(2)))
        what = m.group(3)
        c = Confirmation.parse(int(what) if what.isdigit() else None, raw, fid)
        if c is not None:
            yield what, c


def budget_confirmations(study: optuna.Study) -> dict[int, Confirmation]:
    """Trial number -> its confirmation at the trial budget."""
    out: dict[int, Confirmation] = {}
    for key, raw in study.user_attrs.items():
        number = key[len(CONFIRMED):]
        if key.startswith(CONFIRMED) and number.isdigit():
            c = Confirmation.parse(int(number), raw)
            if c is not None:
                out[int(number)] = c
    return out


def confirmations(study: optuna.Study) -> dict[int, Confirmation]:
    """Trial number -> its record at the highest fidelity it has: promoted (the most epochs x
    images), else confirmed at the trial budget; for the trials trained again so far."""
    out = budget_confirmations(study)
    for what, c in _promoted(study):
        if what.isdigit():
            n = int(what)
            if n not in out or fidelity_level(c.fidelity) > fidelity_level(out[n].fidelity):
                out[n] = c
    return dict(sorted(out.items()))


def promoted(study: optuna.Study, fidelity: Fidelity) -> dict[str, Confirmation]:
    """What was trained at ``fidelity``: trial number (as text) or "bp:<backbone>" -> record."""
    return {what: c for what, c in _promoted(study) if c.fidelity == fidelity}


def bp_confirmation(study: optuna.Study, backbone: str) -> Confirmation | None:
    """BP's record at the highest fidelity it has (as ``confirmations``)."""
    bp = bp_baselines(study).get(backbone)
    best = bp.confirmation() if bp else None
    for what, c in _promoted(study):
        if what == f"bp:{backbone}" and (
                best is None or fidelity_level(c.fidelity) > fidelity_level(best.fidelity)):
            best = c
    return best


def save_confirmation(study: optuna.Study, c: Confirmation, *, backbone: str | None = None
                      ) -> None:
    """Stores ``c``: a trial's under its own key, BP's (``trial`` None) in its backbone's
    BP_BASELINE entry; a promoted one under its fidelity's key."""
    if c.fidelity is not None:
        what = str(c.trial) if c.trial is not None else f"bp:{backbone}"
        study.set_user_attr(f"{fidelity_key(c.fidelity)}{what}", c.stored())
        return
    if c.trial is not None:
        study.set_user_attr(f"{CONFIRMED}{c.trial}", c.stored())
        return
    if backbone is None:
        raise ValueError("a BP confirmation needs its backbone")
    save_bp_baseline(study, backbone, replace(bp_baselines(study)[backbone],
                                              confirmed=c.stored()))


def objective_names(study: optuna.Study) -> list[str]:
    """The names of the study's objectives (accuracy, speedup, memory), from its settings."""
    names = StoredRun.of(study).objectives
    n = len(study.directions)
    return list(names) if names and len(names) == n else [f"objective_{i}" for i in range(n)]
