"""The run settings a study was created with (its SETTINGS attribute), as this side reads
them: through ``read_settings``, which refuses a value no version stored (``attr_readers``).
``study_attrs`` re-exports these names; the attribute's name never changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, get_args

import optuna

from bwbpf.reports.attr_readers import (
    Stored,
    count,
    names,
    obj,
    one_of,
    optional,
    positive,
    text,
    user_attrs,
)
from bwbpf.spaces.limits import CostModel

SETTINGS = "settings"  # SearchSettings.record() of the run that created the study

Reader = Callable[[Stored, Any], Any]
# The settings read on this side and how; other keys are only compared whole with a rerun's
# (stored_settings.conflicts), so any JSON value of theirs is safe. None: not known.
SETTING_READERS: dict[str, Reader] = {
    **{k: optional(text) for k in ("dataset", "sampler", "pruner", "storage")},
    "cost_model": optional(one_of(get_args(CostModel))),
    **{k: optional(count) for k in ("epochs", "train_subset", "batch_size")},
    **{k: optional(names) for k in ("objectives", "references")}}
SPACE_READERS: dict[str, Reader] = {"min_speedup": optional(positive),
                                    "max_memory": optional(positive)}


def read_fields(at: Stored, raw: dict[str, Any], readers: dict[str, Reader]) -> None:
    """Each of ``readers``' keys that ``raw`` holds, through its reader."""
    for key, read in readers.items():
        if key in raw:
            read(at.at(key), raw[key])


def read_settings(at: Stored, raw: Any) -> dict[str, Any]:
    """The stored settings (a copy), each value read here checked; refused when they are not
    an object or a value is not what its key says."""
    settings = obj(at, raw, "the run's settings")
    read_fields(at, settings, SETTING_READERS)
    space = settings.get("space")
    if space is not None:
        read_fields(at.at("space"), obj(at.at("space"), space, "the search space"),
                    SPACE_READERS)
    return dict(settings)


def study_settings(study: optuna.Study) -> dict[str, Any]:
    """The study's settings ({} for a study made before they were stored)."""
    raw = user_attrs(study).get(SETTINGS)
    return {} if raw is None else read_settings(Stored(study.study_name, SETTINGS), raw)


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
        space: dict[str, Any] = raw.get("space") or {}
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


def objective_names(study: optuna.Study) -> list[str]:
    """The names of the study's objectives (accuracy, speedup, memory), from its settings."""
    named = StoredRun.of(study).objectives
    n = len(study.directions)
    return list(named) if named and len(named) == n else [f"objective_{i}" for i in range(n)]
