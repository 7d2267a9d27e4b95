"""The trial record: what `search` writes on every trial and study, and what `reports` reads.

One typed contract for both sides. The attribute names below are stored in users' studies,
so they never change; a field renamed here is one edit that mypy checks everywhere.

- ``TrialRecord``: a trial's user attributes as a frozen dataclass. ``TrialRecord.of(trial)``
  reads them; ``save(trial, old, new)`` writes the fields that changed; ``attrs()`` gives the
  attribute dict (tests build trials by hand with it).
- Study attributes (the run's settings, the BP baselines, the confirmations over seeds) are in
  ``bwbpf.reports.study_attrs``.
- ``ranked`` and ``best_trial`` (among the trials that meet the study's constraints, confirmed
  ones first), ``state_counts``; the rows the run's last lines and the report's table show
  are ``bwbpf.reports.standing.summary_rows``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, Union

import optuna
from optuna.trial import FrozenTrial, TrialState

from bwbpf.reports.seed_record import Confirmation, fidelity_level
from bwbpf.reports.study_attrs import confirmations
from bwbpf.spaces import ConfigError, Decoupling, from_document
from bwbpf.spaces.document import as_document, compact
from bwbpf.spaces.heads import AUX_HEADS

MB = 2**20  # bytes in the MB of every *_mb figure

AnyTrial = Union[FrozenTrial, optuna.Trial]


@dataclass(frozen=True)
class TrialRecord:
    """A trial's user attributes; every field but ``document`` is stored under its own name."""

    document: dict[str, Any] | None = None  # the versioned decoupling document ("decoupling")
    baseline: str | None = None  # "paper" / "uniform" for the reference trials
    # queued by `run --warm-start` (search.run.warm_start): "transferred" (or "transferred:
    # every head F"), "neighbour i: what changed"
    warm_start: str | None = None  # stored as "seeded", its name before the flag's
    # Costs known before training.
    block_flops: tuple[int, ...] = ()
    block_params: tuple[int, ...] = ()
    # Against end-to-end BP on the same backbone and batch (see trainers.cost.NetCost).
    speedup: float | None = None  # BP step / slowest block step, its head included
    # The speed-up from FLOPs, recorded either way (search.trial.costs); ``speedup`` is predicted
    # from measured step times when the study measures them (then ``block_seconds`` is set).
    speedup_flops: float | None = None
    block_seconds: tuple[float, ...] = ()  # measured: predicted step of each block, its head in
    backprop_seconds: float | None = None  # measured: predicted step of end-to-end BP
    compute_overhead: float | None = None  # all blocks' steps / BP's step
    memory_ratio: float | None = None  # peak saved activations / BP's
    peak_activation_mb: float | None = None  # per batch
    backprop_activation_mb: float | None = None
    # Per epoch.
    curve: tuple[float, ...] = ()  # validation accuracy of the final output
    block_curve: tuple[tuple[float, ...], ...] = ()  # [epoch][block] head accuracy
    # How it ended.
    pruned_at: int | None = None  # epoch
    fail_reason: str | None = None
    interrupted: bool = False  # Ctrl-C or a lost worker: does not use budget
    surplus: bool = False  # numbered past the study's budget: not run
    # The study's constraints (--min-speedup, --max-memory), judged on the costs above before
    # training; the reason, e.g. "speed-up 1.21x < 2.00x". A sampled trial that breaks one is
    # rejected: PRUNED, never trained, no budget used. A baseline is trained anyway and marked.
    rejected: str | None = None
    infeasible: str | None = None  # a baseline that breaks a constraint
    # The cut set the parameters drew, when it broke a constraint and the trial was moved to
    # the nearest feasible one (search.trial.placement); the document has what was trained.
    drawn_cuts: tuple[int, ...] = ()
    lighter_heads: bool = False  # and its heads were lightened to make it feasible
    train_seconds: float | None = None
    device: str | None = None
    peak_memory_mb: float | None = None  # CUDA only

    @classmethod
    def of(cls, trial: AnyTrial) -> TrialRecord:
        """The trial's record. A finished trial's is read once: its attributes can no longer
        change, and Optuna's cached storage hands out the same FrozenTrial for it each time,
        so the budget, the ranking and the progress line, read after every trial, parse
        only the trials that changed."""
        if isinstance(trial, FrozenTrial) and trial.state.is_finished():
            kept = _FINISHED.get(id(trial))
            if kept is not None and kept[0]() is trial:
                return kept[1]
            rec = cls._read(trial)
            _FINISHED[id(trial)] = (weakref.ref(trial, _forget(id(trial))), rec)
            return rec
        return cls._read(trial)

    @classmethod
    def _read(cls, trial: AnyTrial) -> TrialRecord:
        attrs = trial.user_attrs
        raw = {f.name: attrs[_key(f.name)] for f in fields(cls) if _key(f.name) in attrs}
        if "document" in raw:
            raw["document"] = as_document(raw["document"])
        for name in ("block_flops", "block_params", "block_seconds", "curve", "drawn_cuts"):
            if name in raw:
                raw[name] = tuple(raw[name])
        if "block_curve" in raw:
            raw["block_curve"] = tuple(tuple(row) for row in raw["block_curve"])
        return cls(**raw)

    def attrs(self) -> dict[str, Any]:
        """The fields that differ from their defaults, as user attributes."""
        blank = TrialRecord()
        return {_key(f.name): _stored(f.name, getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(blank, f.name)}

    @property
    def start_kind(self) -> str | None:
        """A warm start's mark without what describes it ("transferred", "neighbour 3"): what
        a rerun recognises and the summary looks for; None for a trial that is not one."""
        return None if self.warm_start is None else self.warm_start.partition(":")[0]

    @property
    def start_detail(self) -> str:
        """What the mark says after the kind ("every head linear", "cut 2 moved to unit
        13"); empty where it says nothing more."""
        return (self.warm_start or "").partition(":")[2].strip()

    @property
    def feasible(self) -> bool:
        """Meets the study's constraints (always, in a study without any)."""
        return self.rejected is None and self.infeasible is None

    def decoupling(self) -> Decoupling | None:
        """The trial's decoupling, or None for a trial without a (valid) document."""
        if self.document is None:
            return None
        try:
            return from_document(self.document)
        except ConfigError:
            return None


# Fields stored under another name: the attribute names in users' studies never change.
STORED_AS = {"document": "decoupling", "warm_start": "seeded"}


# id(trial) -> (the trial, weakly: its record lives as long as it does; its record)
_FINISHED: dict[int, tuple[weakref.ref[FrozenTrial], TrialRecord]] = {}


def _forget(key: int) -> Callable[[object], None]:
    def forget(_: object) -> None:
        _FINISHED.pop(key, None)

    return forget


def _key(name: str) -> str:
    return STORED_AS.get(name, name)


def _stored(name: str, value: Any) -> Any:
    if name == "document":
        # A compact string: optuna-dashboard shows string attributes whole, but cuts
        # structured ones at 1,024 characters.
        return compact(value)
    if name == "block_curve":
        return [list(row) for row in value]
    return list(value) if isinstance(value, tuple) else value


def save(trial: optuna.Trial, old: TrialRecord, new: TrialRecord) -> TrialRecord:
    """Writes the fields of ``new`` that differ from ``old``; returns ``new``."""
    for f in fields(new):
        value = getattr(new, f.name)
        if value != getattr(old, f.name):
            trial.set_user_attr(_key(f.name), _stored(f.name, value))
    return new


# ---------------------------------------------------------------- what summaries show
def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials that meet the study's constraints (all of them without any)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in done if TrialRecord.of(t).feasible]


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials that meet the study's constraints, best first: each by its highest
    fidelity, promoted trials (search.run.confirm) first by their mean there, then the confirmed
    ones by their mean over seeds, then the others by their single-seed accuracy (accuracy is
    always the first objective); ties go to the earlier trial. Confirmed first: a confirmation runs
    on the best single-seed trials, so one left out ranked lower, and its single seed is the
    kind of figure confirmation exists to correct."""
    return sorted(feasible_trials(study), key=rank_key(confirmations(study)))


RankKey = Callable[[FrozenTrial], tuple[tuple[float, ...], bool, float, int]]


def rank_key(conf: Mapping[int, Confirmation]) -> RankKey:
    """``ranked``'s order, given the study's confirmations: the lower key first."""
    def key(t: FrozenTrial) -> tuple[tuple[float, ...], bool, float, int]:
        c = conf.get(t.number)
        level = fidelity_level(c.fidelity if c else None)
        return tuple(-x for x in level), c is None, -(c.mean if c else t.values[0]), t.number

    return key


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The first of ``ranked``."""
    done = ranked(study)
    return done[0] if done else None


def no_best(study: optuna.Study) -> str:
    """Why there is no best trial to show."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return "no finished trial meets the constraints yet" if done else "no finished trial yet"


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, e.g. {"complete": 12, "pruned": 4, "rejected": 3}, in a stable order;
    "rejected" (by the constraints, never trained) is taken out of "pruned"."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.state.name.lower()
        if t.state == TrialState.PRUNED and TrialRecord.of(t).rejected is not None:
            key = "rejected"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def describe_counts(counts: dict[str, int]) -> str:
    words = {"rejected": "rejected by the constraints"}
    return ", ".join(f"{v} {words.get(k, k)}" for k, v in counts.items()) or "no trials"


def describe(trial: AnyTrial) -> str:
    """One line for a trial's decoupling: backbone, K, cuts, heads."""
    d = TrialRecord.of(trial).decoupling()
    if d is None:
        return ""
    heads = "/".join(a.family + (f"-d{a.depth}" if AUX_HEADS.get(a.family).has_knobs else "")
                     + {"predsim": "+sim", "infopro": "+info"}.get(a.loss, "") for a in d.aux)
    return f"{d.backbone} K={d.num_blocks} cuts {d.cuts} heads {heads or '-'}"
