"""`--n-trials N` is the study's total, shared by every worker and every rerun.

A trial uses budget when it is finished (COMPLETE, PRUNED, FAIL) or RUNNING: a RUNNING trial
whose worker is gone is failed and re-queued when a worker starts or waits for the last trials
(search.workers.reap), so only live ones are counted then. It does not when it is WAITING,
when it failed because the run was interrupted, when a worker died and the trial was
re-queued (its retry counts instead), when it was found surplus (numbered past the budget
because two workers asked at the same moment), or when the constraints rejected it (PRUNED
before training: search.constraints), so `--n-trials` counts trained trials.
"""

from __future__ import annotations

from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from bwbpf.reports import optuna_api
from bwbpf.reports.record import TrialRecord


class SurplusTrial(Exception):
    """This trial was created after the study's budget was already taken; it is not run."""


def _retried(trials: Sequence[FrozenTrial]) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(optuna_api.retried_numbers(t))
    return out


def counts(trial: FrozenTrial, retried: set[int]) -> bool:
    if trial.state == TrialState.WAITING:
        return False
    if trial.state == TrialState.PRUNED:
        return TrialRecord.of(trial).rejected is None
    if trial.state == TrialState.FAIL:
        rec = TrialRecord.of(trial)
        return not (rec.interrupted or rec.surplus or trial.number in retried)
    return True


def using(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Those of a study's ``trials`` (all of them) that use budget."""
    retried = _retried(trials)
    return [t for t in trials if counts(t, retried)]


def used(study: optuna.Study, *, before: int | None = None) -> int:
    """Trials that use budget; with ``before``, only those numbered below it."""
    return sum(1 for t in using(study.get_trials(deepcopy=False))
               if before is None or t.number < before)
