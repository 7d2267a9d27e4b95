"""The budget and the best trial kept between calls (search.study.budget.Ledger, the progress line's
best) are what a count and a ranking from scratch give, however the study's trials change
between two calls; a finished trial's record is read once."""

from __future__ import annotations

import random

import optuna
from optuna.trial import TrialState

from bwbpf.reports import optuna_api
from bwbpf.reports.record import TrialRecord, best_trial, save
from bwbpf.search.run.summary import Progress
from bwbpf.search.study import budget
from bwbpf.search.study.settings import SearchSettings

MARKS = [TrialRecord(), TrialRecord(rejected="speed-up 1.2x < 2x"),
         TrialRecord(interrupted=True), TrialRecord(surplus=True)]


def from_scratch(study: optuna.Study) -> int:
    return len(budget.using(study.get_trials(deepcopy=False)))


def test_the_kept_count_is_the_count_from_scratch_after_every_change() -> None:
    rng = random.Random(0)
    study = optuna.create_study(direction="maximize")
    progress = Progress(study, SearchSettings(study="b", storage="sqlite://", quiet=False))
    running: list[optuna.Trial] = []
    for step in range(300):
        roll = rng.random()
        if roll < 0.35 or not running:
            trial = study.ask()
            save(trial, TrialRecord(), rng.choice(MARKS))
            running.append(trial)
        elif roll < 0.8:
            trial = running.pop(rng.randrange(len(running)))
            state = rng.choice([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
            study.tell(trial, rng.random() if state == TrialState.COMPLETE else None,
                       state=state)
        elif roll < 0.9:  # a retry of a failed trial, queued as Optuna does for a lost worker
            failed = [t.number for t in study.get_trials(states=(TrialState.FAIL,))]
            if failed:
                n = rng.choice(failed)
                study.enqueue_trial({}, user_attrs={})
                waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
                optuna_api.storage_of(study).set_trial_system_attr(
                    optuna_api.trial_id(waiting), optuna_api.RETRY_HISTORY, [n])
        before = rng.randrange(len(study.trials) + 1)
        assert budget.used(study) == from_scratch(study), step
        assert progress.best_so_far(study) is best_trial(study)  # the kept best, the ranked
        assert budget.used(study, before=before) == sum(
            1 for t in budget.using(study.get_trials(deepcopy=False)) if t.number < before)
    progress.close()
    counted = from_scratch(study)
    assert 0 < counted < len(study.trials)  # both kinds were exercised


def test_a_finished_trials_record_is_read_once_and_a_running_ones_each_time() -> None:
    study = optuna.create_study()
    done, live = study.ask(), study.ask()
    save(done, TrialRecord(), TrialRecord(curve=(0.5,)))
    study.tell(done, 0.5)
    frozen = study.get_trials(deepcopy=False)[0]
    assert TrialRecord.of(frozen) is TrialRecord.of(frozen)
    copy = study.get_trials(deepcopy=True)[0]
    assert TrialRecord.of(copy) == TrialRecord.of(frozen)  # a copy reads the same
    save(live, TrialRecord(), TrialRecord(curve=(0.1,)))
    first = TrialRecord.of(study.get_trials(deepcopy=False)[1])
    save(live, TrialRecord(curve=(0.1,)), TrialRecord(curve=(0.1, 0.2)))
    assert TrialRecord.of(study.get_trials(deepcopy=False)[1]).curve == (0.1, 0.2) != first.curve
