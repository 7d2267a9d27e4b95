"""`bwbpf-search run`: open the study, queue the baselines, run trials until the budget is used."""

from __future__ import annotations

import logging
import signal
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

import optuna

from bwbpf.reports.attr_readers import study_names
from bwbpf.reports.stored_run import SETTINGS
from bwbpf.search.run.baselines import enqueue_references, ensure_bp_baselines
from bwbpf.search.run.confirm import confirm
from bwbpf.search.run.summary import Progress
from bwbpf.search.run.warm_start import enqueue_warm_start, read_warm_start
from bwbpf.search.study import budget
from bwbpf.search.study.samplers import make_pruner, make_sampler
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.study.stopping import Terminated, start_worker, stop_workers
from bwbpf.search.study.storage import (
    check_storage_url,
    open_storage,
    open_study,
    storage_cause,
    storage_lost,
)
from bwbpf.search.study.stored_settings import adopt_space, conflicts
from bwbpf.search.study.workers import reap
from bwbpf.search.trial.constraints import RejectionGuard, check_reachable, of_space
from bwbpf.search.trial.costs import attach, step_timer
from bwbpf.search.trial.objective import FAILURES, Objective, study_placer, write_note
from bwbpf.search.trial.placement import Placer, ViableHeads
from bwbpf.spaces import UserError
from bwbpf.trainers import Data, DataError, load_data, memory_guard, resolve_device

log = logging.getLogger("bwbpf.search")
POLL_S = 5.0  # seconds between looks at the running trials that hold the rest of the budget


def prepare_study(s: SearchSettings) -> optuna.Study:
    storage = open_storage(s.storage, heartbeat_s=s.heartbeat)
    # Every worker passes the same seed: trials draw from streams seeded by (seed, number).
    sampler = make_sampler(s.sampler, seed=s.seed, n_trials=s.n_trials)
    pruner = make_pruner(s.pruner, epochs=s.epochs, min_epochs=s.min_epochs,
                         reduction_factor=s.reduction_factor, startup_trials=s.pruner_startup)
    study = open_study(storage, s.study, s.directions, sampler, pruner)
    stored = study.user_attrs.get(SETTINGS)
    if stored is None:
        study.set_user_attr(SETTINGS, s.record())
    else:
        bad = conflicts(s, stored)
        if bad:
            k, old, new = bad[0]
            raise UserError(f"study {s.study!r} was created with {k}={old!r}; this run "
                            f"asks {k}={new!r} (use another --study)")
    return study


def with_stored_space(s: SearchSettings) -> SearchSettings:
    """``s`` with the stored study's space fields that the run does not name (see
    stored_settings.adopt_space); ``s`` itself for a new study. Creates nothing."""
    if s.space_given is None:
        return s
    try:
        storage = open_storage(s.storage, heartbeat_s=None, create=False)
        if s.study not in study_names(storage):
            return s
        sid = storage.get_study_id_from_name(s.study)
        stored = storage.get_study_user_attrs(sid).get(SETTINGS)
    except UserError:  # no storage yet (a new study), or one that prepare_study will name
        return s
    return adopt_space(s, stored) if isinstance(stored, dict) else s


def load_search_data(s: SearchSettings) -> Data:
    return load_data(s.dataset, data_dir=s.data_dir, device=resolve_device(s.device),
                     val_size=s.val_size, train_subset=s.train_subset, seed=s.seed,
                     download=s.download, image_size=s.image_size)


def promoted_data(s: SearchSettings) -> Data:
    """The data of a promoted training: the same validation split, more training images."""
    assert s.promotion is not None
    # the promotion is not part of the data's settings (and at the promoted subset the same
    # epochs would read as a promotion to the search's own budget)
    return load_search_data(replace(s, train_subset=s.promotion[1] or None, promote_top=0))


def check_promoted_data(s: SearchSettings) -> None:
    """Refuses a --promote-subset the dataset cannot give before the search starts, not after
    it (loaded once on the CPU to count, then dropped)."""
    if s.promote_top and s.promote_subset:
        try:
            promoted_data(replace(s, device="cpu"))
        except DataError as e:
            raise UserError(f"--promote-subset {s.promote_subset}: {e}") from None


def start(s: SearchSettings, *, adopted: set[int] | None = None
          ) -> tuple[optuna.Study, Data, bool, Placer]:
    """Checks everything, opens the study, fails the trials of dead workers (``adopted``: see
    search.study.workers.reap) and queues the missing baselines; (study, data, whether to search,
    the study's placer, which holds its step timer): False when the study's budget is used
    and no trial is running that may yet give some back (the data is still wanted:
    confirmation may have seeds to train)."""
    check_storage_url(s.storage)  # refuse bad URLs before data or storage are touched
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Progress says what happens
    resolve_device(s.device)
    data = load_search_data(s)
    if note := data.batch_note(s.batch_size):
        log.warning("%s", note)
    check_promoted_data(s)
    source = read_warm_start(s)  # a bad --warm-start file is refused before the study is touched
    timer = step_timer(s, data)
    with memory_guard("timing the pieces of the space"):  # before the study is touched
        check_reachable(s.space, in_channels=data.in_channels, image_size=data.image_size,
                        num_classes=data.num_classes, timer=timer)
    study = prepare_study(s)
    attach(timer, study)
    placer = study_placer(s, data, timer)
    beats = reap(study, set() if adopted is None else adopted)
    if budget.used(study) >= s.n_trials and not (beats and _running(study)):
        log.info("study %s already holds %d trials (--n-trials %d): nothing to run", s.study,
                 budget.used(study), s.n_trials)
        return study, data, False, placer
    enqueue_warm_start(study, s, placer, source)  # first in the queue
    if s.baselines:
        enqueue_references(study, s, placer)
        with memory_guard("training the BP baseline"):
            ensure_bp_baselines(study, s, data)
    return study, data, True, placer


def run_search(s: SearchSettings) -> optuna.Study:
    """Runs trials until the study holds ``n_trials`` that use budget and none is running,
    or until the timeout; a dead worker's trial is run again here (see _room). Then confirms
    the winners (search.run.confirm), also when the budget was used before this run."""
    adopted: set[int] = set()
    s = with_stored_space(s)
    study, data, searching, placer = start(s, adopted=adopted)
    deadline = None if s.timeout is None else time.monotonic() + s.timeout
    with storage_errors(s):
        if searching:
            search(study, s, data, adopted, deadline, placer)
        confirm(study, s, data, deadline=deadline, promoted_data=lambda: promoted_data(s))
    return study


def search(study: optuna.Study, s: SearchSettings, data: Data, adopted: set[int],
           deadline: float | None, placer: Placer) -> None:
    progress = Progress(study, s)
    objective = Objective(s, data, progress=progress.enabled, placer=placer)
    if placer.left_out:
        study.sampler = ViableHeads(study.sampler, placer.viable, seed=s.seed)
        log.warning("head families %s cannot meet the constraints on any block (at their "
                    "lightest): trials draw among %s", ", ".join(placer.left_out),
                    ", ".join(placer.viable))
    callbacks = [progress, write_note, _stop_at_budget(s.n_trials)]
    rules = of_space(s.space)
    if rules:
        callbacks.append(RejectionGuard(rules))
    try:
        # Rejected samples use no budget (search.study.budget), so this samples on until the
        # study holds n_trials trained trials.
        while _room(study, s, adopted, deadline):
            left = None if deadline is None else deadline - time.monotonic()
            study.optimize(objective, timeout=left, catch=FAILURES, callbacks=callbacks,
                           gc_after_trial=False)
    finally:
        progress.close()


@contextmanager
def storage_errors(s: SearchSettings) -> Iterator[None]:
    """A storage that went away mid-run ends in one line (StorageLost), not a traceback."""
    try:
        yield
    except Exception as e:
        if storage_cause(e) is None:
            raise
        raise storage_lost(e, s.storage) from None


def run_workers(s: SearchSettings, launches: list[tuple[list[str], dict[str, str]]], *,
                poll_s: float = 2.0) -> tuple[optuna.Study, int]:
    """Starts the study (baselines included) here, then one process per (argv, environment)
    of commands.worker_launch, each a worker of the same study; shows their progress; then
    confirms the winners here (the workers do not); returns the study and the worst exit
    status. Processes, not threads: each has its own interpreter and torch thread pool."""
    s = with_stored_space(s)
    study, data, searching, _ = start(s)
    deadline = None if s.timeout is None else time.monotonic() + s.timeout
    code = watch(study, s, launches, poll_s) if searching else 0
    with storage_errors(s):
        confirm(study, s, data, deadline=deadline, promoted_data=lambda: promoted_data(s))
    return study, code


def watch(study: optuna.Study, s: SearchSettings,
          launches: list[tuple[list[str], dict[str, str]]], poll_s: float) -> int:
    """Runs the worker processes to their end, a line per finished trial; the worst status."""
    if s.storage.startswith("sqlite"):
        log.warning("SQLite serialises writers; for parallel workers use PostgreSQL or "
                    "journal:FILE (see README)")
    procs = [start_worker(cmd, env) for cmd, env in launches]
    progress = Progress(study, s)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            for t in study.get_trials(deepcopy=False):
                if t.state.is_finished() and t.number not in seen:
                    seen.add(t.number)
                    progress(study, t)
    except KeyboardInterrupt as e:
        # The terminal's Ctrl-C reached the workers too; SIGTERM may have reached only us.
        stop_workers(procs, signal.SIGTERM if isinstance(e, Terminated) else None)
        raise
    finally:
        progress.close()
    return max(p.returncode for p in procs)


def _stop_at_budget(n_trials: int) -> Any:
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if budget.used(study) >= n_trials:
            study.stop()

    return callback


def _running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def _room(study: optuna.Study, s: SearchSettings, adopted: set[int], deadline: float | None
          ) -> bool:
    """Whether this worker may start a trial. While running trials hold the rest of the
    budget, it waits: they finish, or their worker is gone and they are failed and re-queued
    (reap), and this worker runs them, so the study reaches its total while one worker lives.
    A storage without heartbeats (journal file) cannot tell, so then it does not wait."""
    told = False
    while deadline is None or time.monotonic() < deadline:
        beats = reap(study, adopted)
        if budget.used(study) < s.n_trials:
            return True
        if not (beats and _running(study)):
            return False
        if not told:
            log.info("the study's last trials are running; waiting for them to end")
            told = True
        time.sleep(min(POLL_S, s.heartbeat))
    return False
