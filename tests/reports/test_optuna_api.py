"""Each private Optuna attribute that bwbpf-search reads, against the installed Optuna: a
release that moves one fails here, naming it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy

from bwbpf.reports import optuna_api


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=5,
                                         grace_period=10)
    s = optuna.create_study(study_name="s", storage=storage)
    s.enqueue_trial({"x": 1.0})
    t = s.ask()
    t.suggest_float("x", 0, 2)
    return s


def test_storage_and_study_id_name_the_study(study: optuna.Study) -> None:
    storage = optuna_api.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert storage.get_study_id_from_name("s") == optuna_api.study_id(study)


def test_trial_id_is_the_storage_id_of_the_trial(study: optuna.Study) -> None:
    (t,) = study.get_trials()
    storage = optuna_api.storage_of(study)
    assert storage.get_trial(optuna_api.trial_id(t)).number == t.number


def test_a_retry_names_the_trial_it_repeats(study: optuna.Study) -> None:
    """Optuna's retry callback records the repeated trial where ``retried_numbers`` reads it."""
    (t,) = study.get_trials()
    storage = optuna_api.storage_of(study)
    storage.set_trial_state_values(optuna_api.trial_id(t), optuna.trial.TrialState.FAIL)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        retry = optuna.storages.RetryFailedTrialCallback(max_retry=1)
    retry(study, study.get_trials()[0])
    first, again = study.get_trials()
    assert optuna_api.retried_numbers(first) == []
    assert optuna_api.retried_numbers(again) == [first.number]


def test_heartbeats_are_read_and_recorded(study: optuna.Study, tmp_path: Path) -> None:
    storage = optuna_api.storage_of(study)
    assert optuna_api.heartbeat_interval(storage) == 5
    (t,) = study.get_trials()
    url = f"sqlite:///{tmp_path / 's.db'}"
    beats = "SELECT trial_id FROM trial_heartbeats"
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as db:
        assert list(db.execute(sqlalchemy.text(beats))) == []
    optuna_api.record_heartbeat(storage, t)
    with engine.connect() as db:
        assert [r[0] for r in db.execute(sqlalchemy.text(beats))] == [optuna_api.trial_id(t)]
    engine.dispose()
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    assert optuna_api.heartbeat_interval(journal) is None


def test_a_missing_attribute_is_one_line_naming_it() -> None:
    class Bare:
        pass

    with pytest.raises(optuna_api.OptunaChanged, match=r"has no Study storage \(_storage\); "
                       r"bwbpf-search was checked with Optuna 4\.9 to 5\.1"):
        optuna_api.storage_of(Bare())  # type: ignore[arg-type]
