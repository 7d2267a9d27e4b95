"""Study attributes that `search` writes and `reports` reads: the run's settings, the BP
baselines and the confirmations over seeds (a finished trial's own attributes are read-only,
so they live with the study). The attribute names are stored in users' studies: they never
change. Every value is read through a typed reader (``attr_readers``); the settings' record is
``stored_run``'s, the record over seeds ``seed_record``'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Iterator

import optuna

from bwbpf.reports import optuna_api
from bwbpf.reports.attr_readers import (
    Stored,
    accuracies,
    accuracy,
    count,
    items,
    number,
    obj,
    optional,
    positive,
    step_times,
    text,
    user_attrs,
)
from bwbpf.reports.seed_record import Confirmation, Fidelity, fidelity_level
from bwbpf.reports.stored_run import Reader, read_fields, study_settings

# Study user attributes (SETTINGS: the run's settings, in reports.stored_run).
BP_BASELINE = "bp_baseline"  # backbone -> the BP learning-rate sweep and its winner
CONFIRMED = "confirmed:"  # + a trial number: that trial re-trained over seeds (Confirmation)
BP_CONFIRMED = "confirmed"  # the same, inside a BP_BASELINE entry
# + "<epochs>x<images>:" + a trial number or "bp:<backbone>": trained at a higher fidelity than
# the search's (promotion), over the seeds done so far
PROMOTED = "promoted:"


def fidelity_key(f: Fidelity) -> str:
    return f"{PROMOTED}{f[0]}x{f[1]}:"


def check_study(study: optuna.Study) -> None:
    """Reads every value this version stores in ``study`` through its reader, so a command
    refuses a study it cannot read (attr_readers.BadStoredValue) before it uses or changes
    it, not halfway through."""
    study_settings(study)
    bp_baselines(study)
    confirmations(study)
    step_times(optuna_api.storage_of(study), optuna_api.study_id(study))


@dataclass(frozen=True)
class BPBaseline:
    """End-to-end BP on one backbone at the trial budget: the learning-rate sweep (one entry
    per rate: lr, val_accuracy, curve, train_seconds; a rate that diverged has val_accuracy
    None and ``diverged``, where) and its winner, stored in the study's
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

    def sweep_shown(self) -> str:
        """"the best of 3 in a sweep", with ", 1 diverged" for points that diverged."""
        diverged = sum(1 for p in self.sweep if "val_accuracy" in p
                       and p["val_accuracy"] is None)
        return f"the best of {len(self.sweep)} in a sweep" + (
            f", {diverged} diverged" if diverged else "")

    @classmethod
    def parse(cls, raw: Any, at: Stored | None = None) -> BPBaseline | None:
        """The stored entry read back, each field through its reader (refused where one is
        not what it says); None when it is not an object or lacks the winner's rate or
        accuracy (a sweep not finished)."""
        if not isinstance(raw, dict):
            return None
        at = at or Stored(None, BP_BASELINE)
        read_fields(at, raw, _BP_READERS)
        if BP_CONFIRMED in raw:
            Confirmation.parse(None, obj(at.at(BP_CONFIRMED), raw[BP_CONFIRMED],
                                         "a confirmation"), at=at.at(BP_CONFIRMED))
        if "best_lr" not in raw or "val_accuracy" not in raw:
            return None
        known: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                                 for k, v in raw.items() if k in _BP_KEYS}
        other = tuple((k, v) for k, v in raw.items() if k not in _BP_KEYS and k != BP_CONFIRMED)
        return cls(**known, confirmed=raw.get(BP_CONFIRMED), other=other)

    def confirmation(self) -> Confirmation | None:
        return Confirmation.parse(None, self.confirmed)


_BP_KEYS = ("backbone", "width", "epochs", "weight_decay", "best_lr", "val_accuracy", "curve",
            "sweep")


def read_sweep_point(at: Stored, raw: Any) -> dict[str, Any]:
    """One point of a BP sweep as stored: lr, val_accuracy (None: diverged, and ``diverged``
    says where), curve, train_seconds; each optional (an older study's may hold none)."""
    point = obj(at, raw, "a point of the BP learning-rate sweep")
    read_fields(at, point, _POINT_READERS)
    return point


def _sweep(at: Stored, raw: Any) -> list[dict[str, Any]]:
    return [read_sweep_point(at.at(i), p) for i, p in enumerate(items(at, raw, "the sweep"))]


def _seconds(at: Stored, value: Any) -> float:
    return number(at, value, "seconds (a number >= 0)", lambda x: x >= 0)


_POINT_READERS: dict[str, Reader] = {"lr": positive, "val_accuracy": optional(accuracy),
                                     "curve": accuracies, "train_seconds": _seconds,
                                     "diverged": text}
_BP_READERS: dict[str, Reader] = {
    "backbone": optional(text), "width": optional(positive), "epochs": optional(count),
    "weight_decay": optional(lambda at, v: number(at, v, "a number >= 0", lambda x: x >= 0)),
    "best_lr": positive, "val_accuracy": accuracy, "curve": accuracies, "sweep": _sweep}


def _bp_entries(study: optuna.Study) -> dict[str, Any]:
    """The BP_BASELINE attribute as stored: an object of objects, else refused."""
    at = Stored(study.study_name, BP_BASELINE)
    raw = user_attrs(study).get(BP_BASELINE)
    entries = {} if raw is None else obj(at, raw, "backbone -> its BP baseline")
    for backbone, entry in entries.items():
        obj(at.at(backbone), entry, "a BP baseline")
    return dict(entries)


def bp_baselines(study: optuna.Study) -> dict[str, BPBaseline]:
    """Backbone -> its BP baseline (an entry without its winner, an unfinished sweep, is left
    out)."""
    at = Stored(study.study_name, BP_BASELINE)
    out = {b: BPBaseline.parse(v, at.at(b)) for b, v in _bp_entries(study).items()}
    return {b: v for b, v in out.items() if v is not None}


def save_bp_baseline(study: optuna.Study, backbone: str, bp: BPBaseline) -> None:
    """Stores ``bp`` under ``backbone``, keeping the other backbones' entries as stored."""
    raw = _bp_entries(study)
    raw[backbone] = bp.stored()
    study.set_user_attr(BP_BASELINE, raw)


def bp_sweep_points(study: optuna.Study, backbone: str, head: dict[str, Any]
                    ) -> tuple[dict[str, Any], ...]:
    """The points an unfinished sweep stored for ``backbone`` (as each ended: its entry
    without a winner yet), when it swept under ``head`` (backbone, width, epochs, weight
    decay); else none."""
    entry = _bp_entries(study).get(backbone)
    if entry is None:
        return ()
    BPBaseline.parse(entry, Stored(study.study_name, BP_BASELINE).at(backbone))  # read all
    if any(entry.get(k) != v for k, v in head.items()):
        return ()
    return tuple(entry.get("sweep") or ())


def save_bp_sweep_points(study: optuna.Study, backbone: str, head: dict[str, Any],
                         points: list[dict[str, Any]]) -> None:
    """Stores an unfinished sweep's points under ``backbone``: no winner yet, so every reader
    but ``bp_sweep_points`` leaves the entry out until ``save_bp_baseline`` replaces it."""
    raw = _bp_entries(study)
    raw[backbone] = {**head, "sweep": list(points)}
    study.set_user_attr(BP_BASELINE, raw)


def _promoted(study: optuna.Study) -> Iterator[tuple[str, Confirmation]]:
    """(what: a trial number or "bp:<backbone>", its record) of every promoted entry."""
    for key, raw in user_attrs(study).items():
        m = re.fullmatch(re.escape(PROMOTED) + r"(\d+)x(\d+):(\d+|bp:.+)", key)
        if m is None:
            continue
        fid = (int(m.group(1)), int(m.group(2)))
        what = m.group(3)
        at = Stored(study.study_name, key)
        c = Confirmation.parse(int(what) if what.isdigit() else None,
                               obj(at, raw, "a promoted training's seeds"), fid, at)
        if c is not None:
            yield what, c


def budget_confirmations(study: optuna.Study) -> dict[int, Confirmation]:
    """Trial number -> its confirmation at the trial budget."""
    out: dict[int, Confirmation] = {}
    for key, raw in user_attrs(study).items():
        digits = key[len(CONFIRMED):]
        if key.startswith(CONFIRMED) and digits.isdigit():
            at = Stored(study.study_name, key)
            c = Confirmation.parse(int(digits), obj(at, raw, "a confirmation's seeds"),
                                   at=at)
            if c is not None:
                out[int(digits)] = c
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
