"""The Pareto front of a study: one rule for the report's figure, the trials CSV's ``on_front``
column and ``export --pareto``.

A trial is on the front when it is complete, meets the study's constraints, and no other such
trial is at least as good on every axis and better on one. The axes: accuracy (a trial
confirmed at the search's own budget by its mean over seeds, others by their single seed:
promoted figures are at another budget and not comparable), the recorded speed-up (by the
study's cost model; an axis whenever every such trial has one, an objective or not), and each
further objective of the study in its direction (memory, lower is better).
"""

from __future__ import annotations

from typing import NamedTuple

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from bwbpf.reports.record import TrialRecord, feasible_trials
from bwbpf.reports.stored_run import objective_names
from bwbpf.reports.study_attrs import budget_confirmations


class Points(NamedTuple):
    """The front's candidates with their figures on each axis (accuracy first)."""

    trials: list[FrozenTrial]
    accuracy: list[float]
    speedup: list[float] | None  # None when a candidate has no recorded speed-up
    on_front: list[bool]


def nondominated(values: list[list[float]], maximize: list[bool]) -> list[bool]:
    """For each point, whether no other point is at least as good in every coordinate and
    better in one."""
    signed = [[v if up else -v for v, up in zip(p, maximize)] for p in values]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and a != b

    return [not any(dominates(q, p) for q in signed) for p in signed]


def points(study: optuna.Study) -> Points:
    """Every feasible complete trial, its axes and whether it is on the front."""
    trials = feasible_trials(study)
    conf = budget_confirmations(study)
    accuracy = [conf[t.number].mean if t.number in conf else t.values[0] for t in trials]
    recorded = [TrialRecord.of(t).speedup for t in trials]
    speedup = None if any(s is None for s in recorded) else [float(s or 0) for s in recorded]
    axis = [] if speedup is None else [speedup]
    names = objective_names(study)
    others = [i for i, name in enumerate(names)
              if i > 0 and not (name == "speedup" and speedup is not None)]
    maximize = [True, *(True for _ in axis),
                *(study.directions[i] == StudyDirection.MAXIMIZE for i in others)]
    values = [[a, *(s[k] for s in axis), *(t.values[i] for i in others)]
              for k, (t, a) in enumerate(zip(trials, accuracy))]
    return Points(trials, accuracy, speedup, nondominated(values, maximize))


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The trials on the front, most accurate first (ties: the earlier trial)."""
    p = points(study)
    on = [(a, t) for a, t, keep in zip(p.accuracy, p.trials, p.on_front) if keep]
    return [t for a, t in sorted(on, key=lambda x: (-x[0], x[1].number))]
