"""The speed-up a search optimises: measured step times kept in the study, FLOPs beside."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from bwbpf.reports.attr_readers import STEP_SECONDS
from bwbpf.reports.record import TrialRecord
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.study.stored_settings import conflicts
from bwbpf.search.trial.costs import run_cost_model

from .conftest import FAST, Runner

SMALL = [*FAST, "--train-subset", "200", "--val-size", "100", "--pruner", "none"]


def step_times(db: str, name: str) -> dict[str, float]:
    storage = optuna.storages.get_storage(db)
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(name))
    return {k: v for k, v in attrs.items() if k.startswith(STEP_SECONDS)}


def test_trials_record_the_measured_speedup_and_flops_and_a_rerun_reuses_the_times(
        cli: Runner, db: str) -> None:
    argv = ["-q", "run", "--storage", db, "--study", "m", "--no-baselines", *SMALL]
    rc, _, err = cli(*argv, "--n-trials", "2")
    assert rc == 0, err
    times = step_times(db, "m")
    assert any("|unit|" in k for k in times) and any("|classifier|" in k for k in times)
    study = optuna.load_study(study_name="m", storage=db)
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        rec = TrialRecord.of(t)
        d = rec.decoupling()
        assert d and rec.backprop_seconds and len(rec.block_seconds) == d.num_blocks
        assert rec.speedup == pytest.approx(rec.backprop_seconds / max(rec.block_seconds),
                                            abs=2e-4)
        assert rec.speedup_flops is not None and rec.speedup_flops != rec.speedup
        doc = rec.document or {}
        assert doc["metrics"]["speedup"] == rec.speedup
        assert doc["metrics"]["speedup_flops"] == rec.speedup_flops
        # every piece the trial is made of was timed once, and is kept in the study
        assert sum(1 for k in times if "|head|" in k) >= 1
    rc, _, err = cli(*argv, "--n-trials", "4")
    assert rc == 0, err
    after = step_times(db, "m")
    assert {k: after[k] for k in times} == times  # reused, never timed again


def test_the_cost_model_is_fixed_for_a_study(cli: Runner, db: str) -> None:
    argv = ["-q", "run", "--storage", db, "--study", "f", "--no-baselines", "--n-trials", "1",
            *SMALL]
    assert cli(*argv, "--cost-model", "flops")[0] == 0
    assert step_times(db, "f") == {}  # nothing timed under FLOPs
    rec = TrialRecord.of(optuna.load_study(study_name="f", storage=db).trials[0])
    assert rec.speedup == rec.speedup_flops and not rec.block_seconds
    rc, _, err = cli(*argv)
    assert rc == 2 and "created with cost_model='flops'; this run asks cost_model='measured'" \
        in err
    rc, _, err = cli(*argv, "--cost-model", "seconds")
    assert rc == 2 and "--cost-model: invalid choice: 'seconds'" in err


def test_a_study_stored_before_measured_costs_meant_flops() -> None:
    stored = SearchSettings(study="old", storage="sqlite:///x.db").record()
    del stored["cost_model"]
    assert conflicts(SearchSettings(study="old", storage="sqlite:///x.db"), stored) == [
        ("cost_model", "flops", "measured")]
    assert conflicts(SearchSettings(study="old", storage="sqlite:///x.db",
                                    cost_model="flops"), stored) == []


@pytest.mark.parametrize(("given", "doc", "model"), [
    ("flops", {"constraints": {"min_speedup": 2, "cost_model": "measured"}}, "flops"),
    (None, {"constraints": {"min_speedup": 2, "cost_model": "flops"}}, "flops"),
    (None, {"metrics": {"speedup": 2.1, "cost_model": "flops"}}, "flops"),
    # documents from before the metrics named it: measured exactly when step times are there
    (None, {"metrics": {"speedup": 2.1, "block_seconds": [0.1, 0.2]}}, "measured"),
    (None, {"metrics": {"speedup": 2.1}}, "flops"),
    (None, {"metrics": {}}, SearchSettings.cost_model),
    (None, None, SearchSettings.cost_model),  # paper / uniform: the search's default
])
def test_a_train_run_judges_its_speedup_as_its_document_was(given: str | None,
                                                           doc: dict | None, model: str
                                                           ) -> None:
    assert run_cost_model(given, doc) == model  # type: ignore[arg-type]
