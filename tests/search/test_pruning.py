"""The accuracy-curve pruner and the budget, driven with ask/tell: no training."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from bwbpf.reports.record import TrialRecord, state_counts
from bwbpf.search.study import budget
from bwbpf.search.study.pruning import CurvePruner


def finished_study(curves: list[list[float]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "maximize"])
    for c in curves:
        t = study.ask()
        for key, value in TrialRecord(curve=tuple(c)).attrs().items():
            t.set_user_attr(key, value)
        study.tell(t, [c[-1], 1.0])
    return study


def test_successive_halving_keeps_the_top_third_at_rungs() -> None:
    study = finished_study([[0.5, 0.6, 0.7], [0.6, 0.7, 0.8], [0.7, 0.8, 0.9],
                            [0.4, 0.5, 0.6], [0.3, 0.4, 0.5]])
    p = CurvePruner("sha", min_epochs=1, reduction_factor=3)
    assert [p.is_rung(e) for e in (1, 2, 3, 4, 9)] == [True, False, True, False, True]
    # 6 trials reach epoch 1: the top 6 // 3 = 2 go on, i.e. >= 0.6
    assert p.should_prune(study, 99, [0.55]) is True
    assert p.should_prune(study, 99, [0.65]) is False
    assert p.should_prune(study, 99, [0.1, 0.1]) is False  # epoch 2 is not a rung
    hb = CurvePruner("hyperband", min_epochs=2, reduction_factor=2)
    assert hb.rule == "sha" and hb.should_prune(study, 99, [0.0]) is False  # before min_epochs


def test_median_needs_startup_trials() -> None:
    study = finished_study([[0.5], [0.7], [0.9]])
    assert CurvePruner("median", startup_trials=3).should_prune(study, 99, [0.6]) is True
    assert CurvePruner("median", startup_trials=3).should_prune(study, 99, [0.8]) is False
    assert CurvePruner("median", startup_trials=4).should_prune(study, 99, [0.1]) is False
    assert CurvePruner("none").should_prune(study, 99, [0.0]) is False


def test_first_trial_at_a_rung_is_never_pruned() -> None:
    study = optuna.create_study(directions=["maximize", "maximize"])
    assert CurvePruner("sha").should_prune(study, 0, [0.01]) is False


def test_bad_pruner_settings() -> None:
    with pytest.raises(ValueError, match="reduction_factor=1"):
        CurvePruner("sha", reduction_factor=1)


def test_budget_ignores_waiting_interrupted_retried_and_surplus() -> None:
    study = optuna.create_study()
    states = []
    for i in range(6):
        t = study.ask()
        marks = {1: TrialRecord(interrupted=True), 2: TrialRecord(surplus=True)}
        for key, value in marks.get(i, TrialRecord()).attrs().items():
            t.set_user_attr(key, value)
        state = TrialState.FAIL if i in (1, 2, 3) else TrialState.COMPLETE
        study.tell(t, None if state == TrialState.FAIL else 1.0, state=state)
        states.append(state)
    study.enqueue_trial({})  # waiting: not budget yet
    # a re-queued copy of trial 4 (as the heartbeat retry callback makes): 4 stops counting
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, system_attrs={
        "failed_trial": 3, "retry_history": [3]}))
    assert budget.used(study) == 3  # trials 0, 4, 5
    assert budget.used(study, before=4) == 1
    assert state_counts(study) == {"complete": 3, "fail": 3, "waiting": 2}
