"""A study's stored settings are read by one rule: as stored, else the setting's declared
``before`` (what a study made before it existed meant), else its default."""

from __future__ import annotations

import optuna
import pytest

from bwbpf.reports.attr_readers import BadStoredValue
from bwbpf.reports.stored_run import SETTINGS
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.study.stored_settings import StoredSettings
from bwbpf.search.winners.exporting import study_limits
from bwbpf.spaces.declared import before

OLD = {"dataset": "synthetic", "epochs": 2, "space": {"min_speedup": 1.5}}  # an older record


def _study(record: object) -> optuna.Study:
    study = optuna.create_study()
    study.set_user_attr(SETTINGS, record)
    return study


def test_a_younger_setting_reads_as_what_the_study_meant_not_as_todays_default() -> None:
    stored = StoredSettings.of(_study(OLD))
    old = before(SearchSettings)
    assert stored.predates("cost_model") and stored.predates("references")
    assert stored.meant("cost_model") == old["cost_model"] != SearchSettings.cost_model
    assert tuple(stored.meant("references")) == old["references"] != SearchSettings.references
    assert stored.meant("batch_size") == SearchSettings.batch_size  # declared as always there
    assert stored.meant("epochs") == 2 and not stored.predates("epochs")
    assert stored.space()["min_speedup"] == 1.5 and stored.space()["max_memory"] is None


def test_a_study_being_created_predates_nothing() -> None:
    stored = StoredSettings.of(optuna.create_study())
    assert stored.record == {} and not stored.predates("references")


def test_the_exported_constraints_read_the_study_by_the_same_rule() -> None:
    limits = study_limits(_study({**OLD, "cost_model": "measured"}))
    assert (limits.min_speedup, limits.cost_model) == (1.5, "measured")
    for older in (OLD, {**OLD, "cost_model": None}):  # not stored, or stored as not known
        assert study_limits(_study(older)).cost_model == before(SearchSettings)["cost_model"]


def test_a_cost_model_this_version_does_not_know_is_refused_naming_it() -> None:
    with pytest.raises(BadStoredValue, match=r"\(cost_model\) is 'gpu'; expected 'measured' "
                                             r"or 'flops'"):
        StoredSettings.of(_study({**OLD, "cost_model": "gpu"}))
