"""Many workers on one study: each trial's own sampler stream, and the trials of dead workers.

Workers on several machines run the same command, so they share ``--seed``. Samplers seeded
with it alone draw the same trials in every worker; ``TrialSeeded`` seeds trial n from
(``--seed``, n) instead. The storage hands out each trial number once, so no two workers share
a stream, and one process replays its study from ``--seed``, trial by trial.

A RUNNING trial uses budget (search.study.budget). Optuna fails a trial whose heartbeat lapsed only
when a worker is about to start another trial, and never one without a heartbeat (its worker
died between creating it and the first beat); ``reap`` does both, so a rerun finishes.
A journal file keeps no heartbeats, so there each trial records its worker (host, process id
and the process's start time, ``mark_worker``), and ``reap`` fails the RUNNING trials whose
worker on this host is gone (a journal file is shared by the processes of one machine).
"""

from __future__ import annotations

import os
import socket
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.samplers import BaseSampler
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from bwbpf.reports import optuna_api
from bwbpf.search.study.storage import HEARTBEAT_RETRIES


def trial_seed(seed: int | None, number: int) -> int | None:
    """Trial ``number``'s sampler seed (32 bits): one per (seed, number); None stays None."""
    if seed is None:
        return None  # fresh entropy for every trial
    return int(np.random.SeedSequence([seed % 2**64, number]).generate_state(1)[0])


class TrialSeeded(BaseSampler):
    """The sampler ``build(seed)`` makes, made anew for each trial with ``trial_seed``.

    Made anew rather than reseeded, as Optuna's samplers keep their random states private.
    Little is lost: TPE and NSGA-II keep what they learn in the storage (trials, system
    attributes); GP loses only its warm start for fitting kernel parameters. One trial at a
    time per process (workers are processes here, not ``n_jobs`` threads).
    """

    def __init__(self, build: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._build, self._seed = build, seed
        self.base = build(seed)  # the sampler of the trial being set up or run

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base = self._build(trial_seed(self._seed, trial.number))
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()  # the next trial's sampler is seeded from its number again


def reap(study: optuna.Study, adopted: set[int]) -> bool:
    """Fails the RUNNING trials whose worker is gone, so that they neither hold budget nor stay
    RUNNING for good; the storage's retry callback re-queues each with its parameters.

    A trial whose heartbeat lapsed is failed now. A trial without any heartbeat is never stale
    to Optuna: one older than a heartbeat interval (a live worker beats at once) gets one beat
    here, once per process (``adopted`` holds the trial ids), and then lapses like any other
    unless its worker is alive. Returns False when the storage keeps no heartbeats (journal
    files): nothing there tells a dead worker's trial from a live one.
    """
    storage = optuna_api.storage_of(study)
    beat = optuna_api.heartbeat_interval(storage)
    if beat is None:
        _fail_orphans(study)
        return False
    interval = timedelta(seconds=beat)
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    now = datetime.now()  # trial start times are local, naive (Optuna's create_new_trial)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        old = t.datetime_start is not None and now - t.datetime_start > interval
        if old and optuna_api.trial_id(t) not in adopted:
            adopted.add(optuna_api.trial_id(t))
            optuna_api.record_heartbeat(storage, t)
    return True


# ---------------------------------------------------------------- journal files: no heartbeats
# Trial system attribute: "machine|pid|start|number" of the process running trial ``number``,
# the machine being its host name, boot and pid namespace (containers sharing a host name do
# not see each other's processes). A re-queued trial inherits its predecessor's system
# attributes: the number tells them apart.
WORKER = "bwbpf:worker"


def _machine() -> str:
    """Where process ids mean the same process: this host, this boot, this pid namespace."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("ns/pid")
                         else Path(path).read_text().strip())
        except OSError:
            parts.append("?")
    return "/".join(parts).replace("|", "/")


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), telling a reused pid from
    the process that held it; None where the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):  # no /proc: alive or not, its start time unknown
        return "?" if _exists(pid) else None


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def mark_worker(trial: optuna.Trial) -> None:
    """Records which process runs ``trial`` (journal files only: RDB storages beat)."""
    storage = optuna_api.storage_of(trial.study)
    if optuna_api.heartbeat_interval(storage) is None:
        pid = os.getpid()
        mark = f"{_machine()}|{pid}|{_started(pid)}|{trial.number}"
        storage.set_trial_system_attr(optuna_api.trial_id(trial), WORKER, mark)


def _gone(mark: object, number: int) -> bool:
    """Whether the worker that marked trial ``number`` is known to be dead. Unknown (another
    machine, boot or pid namespace; another trial's mark) is not dead."""
    if not isinstance(mark, str) or mark.count("|") != 3:
        return False
    machine, pid, started, of = mark.split("|")
    if machine != _machine() or "?" in machine or not pid.isdigit() or of != str(number):
        return False
    now = _started(int(pid))
    return now is None or (now != "?" and started != "?" and now != started)


def _fail_orphans(study: optuna.Study) -> None:
    """Fails each RUNNING trial whose worker on this machine is gone, and re-queues it with
    its parameters as the RDB storages' heartbeat callback does. Another process may fail the
    same trial first (two reruns at once): then it is theirs to re-queue."""
    storage = optuna_api.storage_of(study)
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=HEARTBEAT_RETRIES)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not _gone(t.system_attrs.get(WORKER), t.number):
                continue
            try:
                failed = storage.set_trial_state_values(optuna_api.trial_id(t), TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
            if failed:
                retry(study, storage.get_trial(optuna_api.trial_id(t)))
