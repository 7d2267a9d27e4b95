"""The one place that reaches into Optuna's private API.

Optuna offers no public way from a ``Study`` to its storage and id, from a ``FrozenTrial`` to
its storage id, or to tell the storages that keep heartbeats; its own code reads these
attributes. Each use is a function here, checked by ``tests/reports/test_optuna_api.py``
against the installed Optuna. pyproject bounds Optuna to the releases that were checked
(``TESTED``); a release that moves one of them fails here with one line, not deep inside a run.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

TESTED = "4.9 to 5.1"  # the Optuna releases these functions were checked against


class OptunaChanged(RuntimeError):
    """The installed Optuna no longer has an attribute that bwbpf-search reads."""


def _get(obj: Any, name: str, what: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise OptunaChanged(f"Optuna {optuna.__version__} has no {what} ({name}); bwbpf-search "
                            f"was checked with Optuna {TESTED}") from None


def storage_of(study: optuna.Study) -> BaseStorage:
    return _get(study, "_storage", "Study storage")


def study_id(study: optuna.Study) -> int:
    return int(_get(study, "_study_id", "Study id"))


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    return int(_get(trial, "_trial_id", "trial storage id"))


# Where Optuna's RetryFailedTrialCallback records, on a retry, the numbers of the trials it
# repeats (its public reader is experimental and warns on every call).
RETRY_HISTORY = "retry_history"


def retried_numbers(trial: FrozenTrial) -> list[int]:
    """The numbers of the trials that ``trial`` retries (none for a trial that is no retry)."""
    return [int(n) for n in trial.system_attrs.get(RETRY_HISTORY, [])]


def heartbeat_interval(storage: BaseStorage) -> int | None:
    """Seconds between heartbeats, or None for a storage that keeps none (journal files)."""
    from optuna.storages import _heartbeat

    base = _get(_heartbeat, "BaseHeartbeat", "heartbeat base class")
    if not isinstance(storage, base):
        return None
    return storage.get_heartbeat_interval() or None


def record_heartbeat(storage: BaseStorage, trial: FrozenTrial) -> None:
    _get(storage, "record_heartbeat", "storage heartbeat")(trial_id(trial))
