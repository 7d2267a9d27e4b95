"""What a study was created with, read by one rule whatever version stored it, and what a
rerun makes of it.

A study stores ``SearchSettings.record()`` (its SETTINGS attribute, each value checked by
``reports.stored_run.read_settings``). A setting younger than the study is missing there and
reads as what the study meant then: its declared ``before`` (spaces.declared), else its
default; the space's fields likewise. Every reading of a study's settings on the search side
goes through ``StoredSettings``: the rerun's conflicts, the space a rerun adopts, the
constraints' cost model and the batch size an export carries with, the references a resumed
study keeps.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

import optuna

from bwbpf.reports.attr_readers import Stored
from bwbpf.reports.stored_run import SETTINGS, read_settings, study_settings
from bwbpf.search.study.settings import SearchSettings, space_record
from bwbpf.spaces import ConfigError, SearchSpace
from bwbpf.spaces.declared import before, identity


def _default(cls: Any, key: str) -> Any:
    f = next(f for f in fields(cls) if f.name == key)
    if f.default is MISSING and f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


@dataclass(frozen=True)
class StoredSettings:
    """A study's stored settings ({} for a study with none: made before they were stored, or
    being created by this run)."""

    record: dict[str, Any]

    @classmethod
    def of(cls, study: optuna.Study) -> StoredSettings:
        return cls(study_settings(study))

    @classmethod
    def parse(cls, study_name: str, raw: Any) -> StoredSettings:
        """``raw`` as stored, checked (refused when it is not settings)."""
        return cls(read_settings(Stored(study_name, SETTINGS), raw))

    def predates(self, key: str) -> bool:
        """The study has settings, stored before ``key`` was one of them."""
        return bool(self.record) and key not in self.record

    def knows(self, key: str) -> bool:
        """The study's meaning of ``key`` is known: stored, or declared for older studies."""
        return key in self.record or key in before(SearchSettings)

    def meant(self, key: str) -> Any:
        """What the study meant by ``key``: as stored, else its ``before``, else its default
        (a value stored as None, "not known", reads as not stored)."""
        if self.record.get(key) is not None:
            return self.record[key]
        return before(SearchSettings).get(key, _default(SearchSettings, key))

    def space(self) -> dict[str, Any]:
        """The stored space record, complete (see ``stored_space``)."""
        space = self.record.get("space")
        return stored_space(space if isinstance(space, dict) else {})


def stored_space(record: dict[str, Any]) -> dict[str, Any]:
    """A study's stored space record, complete: a field added since the study was created
    reads as what the study meant (its declared ``before``), else as its default."""
    return {**space_record(SearchSpace()), **before(SearchSpace), **record}


def conflicts(s: SearchSettings, raw: Any) -> list[tuple[str, Any, Any]]:
    """(key, the study's value, this run's) of every identity setting of ``s`` that differs
    from those the study was created with (``raw``, as stored: refused when it is not
    settings); space fields one by one ("space.min_speedup")."""
    stored = StoredSettings.parse(s.study, raw)
    mine = s.record()
    out = []
    for k in ("space", *identity(SearchSettings)):
        if not stored.knows(k):
            continue
        if k == "space" and isinstance(stored.record[k], dict):
            old = stored.space()
            out += [(f"space.{f}", old.get(f), v) for f, v in mine[k].items() if old.get(f) != v]
        elif (old_value := stored.meant(k)) != mine[k]:
            out.append((k, old_value, mine[k]))
    return out


def adopt_space(s: SearchSettings, raw: Any) -> SearchSettings:
    """``s`` with the stored study's value of every space field the run does not name: a
    rerun without flags resumes a study made under other defaults (older versions searched
    fewer heads and losses). A named field that differs is still a conflict."""
    stored = StoredSettings.parse(s.study, raw)
    if s.space_given is None or not isinstance(stored.record.get("space"), dict):
        return s
    old = stored.space()
    mine = space_record(s.space)
    keep = {f: old[f] for f in mine if f not in s.space_given and f in old}
    if all(mine[f] == v for f, v in keep.items()):
        return s
    try:
        adopted = SearchSpace.from_mapping({**mine, **keep}, where="the study's space")
    except ConfigError:  # a stored space this version cannot build: conflicts() says so
        return s
    return replace(s, space=adopted)
