"""`--n-trials N` is the study's total, shared by every worker and every rerun.

A trial uses budget when it is finished (COMPLETE, PRUNED, FAIL) or RUNNING. It does not when
it is WAITING, when it failed because the run was interrupted, when a worker died and the trial
was re-queued (its retry counts instead), or when it was found surplus (numbered past the
budget because two workers asked at the same moment).
"""

from __future__ import annotations

from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

INTERRUPTED = "interrupted"
SURPLUS = "surplus"


class SurplusTrial(Exception):
    """This trial was created after the study's budget was already taken; it is not run."""


def _retried(trials: Sequence[FrozenTrial]) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def counts(trial: FrozenTrial, retried: set[int]) -> bool:
    if trial.state == TrialState.WAITING:
        return False
    if trial.state == TrialState.FAIL:
        attrs = trial.user_attrs
        return not (attrs.get(INTERRUPTED) or attrs.get(SURPLUS) or trial.number in retried)
    return True


def used(study: optuna.Study, *, before: int | None = None) -> int:
    """Trials that use budget; with ``before``, only those numbered below it."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    return sum(1 for t in trials
               if counts(t, retried) and (before is None or t.number < before))


def finished(study: optuna.Study) -> dict[str, int]:
    """Counts by state, for progress and summaries."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out
