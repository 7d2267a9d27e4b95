"""`--n-trials N` is the study's total, shared by every worker and every rerun.

A trial uses budget when it is finished (COMPLETE, PRUNED, FAIL) or RUNNING: a RUNNING trial
whose worker is gone is failed and re-queued when a worker starts or waits for the last trials
(search.study.workers.reap), so only live ones are counted then. It does not when it is WAITING,
when it failed because the run was interrupted, when a worker died and the trial was
re-queued (its retry counts instead), when it was found surplus (numbered past the budget
because two workers asked at the same moment), or when the constraints rejected it (PRUNED
before training: search.trial.constraints), so `--n-trials` counts trained trials.
"""

from __future__ import annotations

import weakref
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
    """Trials that use budget; with ``before``, only those numbered below it. Asked after
    every trial, so the study's ``Ledger`` is kept between calls."""
    storage = optuna_api.storage_of(study)
    ledgers = _LEDGERS.setdefault(storage, {})
    ledger = ledgers.setdefault(optuna_api.study_id(study), Ledger())
    return ledger.update(study.get_trials(deepcopy=False)).used(before)


class Changes:
    """The trials of one study that may have changed since the last look: those new since,
    and those unfinished then. A finished trial's state and record never change again, so a
    look costs what changed, not the study's size."""

    def __init__(self) -> None:
        self.size = 0
        self.open: set[int] = set()  # unfinished at the last look

    def since(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """Of ``trials`` (a study's, numbered 0..n-1 in order), those to look at again."""
        if trials and trials[-1].number != len(trials) - 1:
            raise ValueError("trials must be a study's, numbered 0..n-1 in order")
        look = [trials[n] for n in sorted(self.open | set(range(self.size, len(trials))))]
        self.size, self.open = len(trials), {t.number for t in look if not t.state.is_finished()}
        return look


class Ledger:
    """One study's budget as counted so far (``Changes``). A failed trial's count also
    depends on whether a later trial retries it: the retried numbers are gathered as those
    trials are read."""

    def __init__(self) -> None:
        self.changes = Changes()
        self.counted: list[bool] = []  # by trial number, without the retries
        self.failed: set[int] = set()  # FAIL trials counted, unless retried
        self.retried: set[int] = set()

    def update(self, trials: Sequence[FrozenTrial]) -> Ledger:
        look = self.changes.since(trials)
        self.counted.extend([False] * (len(trials) - len(self.counted)))
        for t in look:
            self.retried.update(optuna_api.retried_numbers(t))
            self.counted[t.number] = counts(t, set())
            if t.state == TrialState.FAIL and self.counted[t.number]:
                self.failed.add(t.number)
        return self

    def used(self, before: int | None = None) -> int:
        end = len(self.counted) if before is None else before
        return sum(self.counted[:end]) - sum(1 for n in self.failed & self.retried if n < end)


# storage object -> study id -> its ledger; a storage that is gone takes its ledgers along
_LEDGERS: weakref.WeakKeyDictionary[object, dict[int, Ledger]] = weakref.WeakKeyDictionary()
