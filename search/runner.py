"""`bwbpf-search run`: open the study, queue the baselines, run trials until the budget is used."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from typing import Any

import optuna

from bwbpf.reports.plots import describe
from bwbpf.reports.plots import summary as report_summary
from bwbpf.search import budget
from bwbpf.search.baselines import BASELINE, enqueue_references, ensure_bp_baselines
from bwbpf.search.objective import FAILURES, Objective
from bwbpf.search.settings import SearchSettings
from bwbpf.search.study import (
    check_storage_url,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    storage_cause,
    storage_lost,
)
from bwbpf.spaces import UserError
from bwbpf.trainers import Data, load_data, resolve_device

log = logging.getLogger("bwbpf.search")
SETTINGS_ATTR = "settings"


def prepare_study(s: SearchSettings, *, worker: int = 0) -> optuna.Study:
    storage = open_storage(s.storage, heartbeat_s=s.heartbeat)
    n_obj = len(s.objectives)
    sampler = make_sampler(s.sampler, seed=s.seed + worker, n_trials=s.n_trials,
                           n_objectives=n_obj)
    pruner = make_pruner(s.pruner, epochs=s.epochs, min_epochs=s.min_epochs,
                         reduction_factor=s.reduction_factor, startup_trials=s.pruner_startup)
    study = open_study(storage, s.study, s.directions, sampler, pruner)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, s.record())
    else:
        bad = s.conflicts(stored)
        if bad:
            k = bad[0]
            raise UserError(f"study {s.study!r} was created with {k}={stored[k]!r}; this run "
                            f"asks {k}={s.record()[k]!r} (use another --study)")
    return study


def load_search_data(s: SearchSettings) -> Data:
    return load_data(s.dataset, data_dir=s.data_dir, device=resolve_device(s.device),
                     val_size=s.val_size, train_subset=s.train_subset, seed=s.seed,
                     download=s.download, image_size=s.image_size)


def start(s: SearchSettings, *, worker: int = 0) -> tuple[optuna.Study, Data | None]:
    """Checks everything, opens the study and queues its baselines; (study, data), or
    (study, None) when the study's budget is already used."""
    check_storage_url(s.storage)  # refuse bad URLs before data or storage are touched
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Progress says what happens
    resolve_device(s.device)
    data = load_search_data(s)
    study = prepare_study(s, worker=worker)
    if budget.used(study) >= s.n_trials:
        log.info("study %s already holds %d trials (--n-trials %d): nothing to run", s.study,
                 budget.used(study), s.n_trials)
        return study, None
    if s.baselines:
        if not study.get_trials(deepcopy=False):
            enqueue_references(study, s)
        ensure_bp_baselines(study, s, data)
    return study, data


def run_search(s: SearchSettings, *, worker: int = 0) -> optuna.Study:
    """Runs trials until the study holds ``n_trials`` that use budget (or the timeout)."""
    study, data = start(s, worker=worker)
    if data is None:
        return study
    progress = Progress(study, s)
    try:
        study.optimize(Objective(s, data, progress=progress.enabled), timeout=s.timeout,
                       catch=FAILURES, callbacks=[progress, _stop_at_budget(s.n_trials)],
                       gc_after_trial=False)
    except Exception as e:
        if storage_cause(e) is None:
            raise
        raise storage_lost(e, s.storage) from None
    finally:
        progress.close()
    return study


def run_workers(s: SearchSettings, commands: list[list[str]], *, poll_s: float = 2.0
                ) -> tuple[optuna.Study, int]:
    """Starts the study (baselines included) here, then one process per command, each a
    worker of the same study; shows their progress; returns the study and the worst exit
    status. Processes, not threads: each has its own interpreter and torch thread pool."""
    study, data = start(s)
    if data is None:
        return study, 0
    if s.storage.startswith("sqlite"):
        log.warning("SQLite serialises writers; for parallel workers use PostgreSQL or "
                    "journal:FILE (see README)")
    env = {**os.environ, "BWBPF_STORAGE": s.storage}  # not on the command line: `ps` shows it
    procs = [subprocess.Popen(cmd, env=env) for cmd in commands]
    progress = Progress(study, s)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            for t in study.get_trials(deepcopy=False):
                if t.state.is_finished() and t.number not in seen:
                    seen.add(t.number)
                    progress(study, t)
    except KeyboardInterrupt:
        for p in procs:  # the terminal's Ctrl-C reached them too; wait for a clean exit
            p.wait()
        raise
    finally:
        progress.close()
    return study, max(p.returncode for p in procs)


def _stop_at_budget(n_trials: int) -> Any:
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if budget.used(study) >= n_trials:
            study.stop()

    return callback


class Progress:
    """A bar over the study's trials with the best so far, and one line per finished trial."""

    def __init__(self, study: optuna.Study, s: SearchSettings) -> None:
        self.s, self.enabled, self.bar = s, not s.quiet, None
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=s.n_trials, initial=budget.used(study), desc=s.study,
                            unit="trial", dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.bar is None:
            return
        from tqdm import tqdm

        tqdm.write(trial_line(trial))
        self.bar.n = min(self.s.n_trials, budget.used(study))
        best = best_trial(study)
        if best is not None:
            self.bar.set_postfix(best=f"{best.values[0]:.4f} (#{best.number})")
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The most accurate finished trial (of the Pareto front, for multi-objective studies)."""
    done = [t for t in study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.COMPLETE,))]
    return max(done, key=lambda t: t.values[0]) if done else None


def trial_line(t: optuna.trial.FrozenTrial) -> str:
    tag = f" [{t.user_attrs[BASELINE]}]" if BASELINE in t.user_attrs else ""
    what = describe(t)
    if t.state == optuna.trial.TrialState.COMPLETE:
        vals = " ".join(f"{v:.4f}" for v in t.values)
        return f"trial {t.number}{tag}: {vals}  {what}"
    extra = t.user_attrs.get("fail_reason") or (
        f"at epoch {t.user_attrs['pruned_at']}" if "pruned_at" in t.user_attrs else "")
    return f"trial {t.number}{tag}: {t.state.name.lower()} {extra}  {what}".rstrip()


def summary(study: optuna.Study) -> list[str]:
    """Best against the BP baseline and the reference decouplings, whichever wins."""
    counts = budget.finished(study)
    lines = [f"study {study.study_name}: " + ", ".join(f"{v} {k.lower()}"
                                                       for k, v in sorted(counts.items()))]
    rows = report_summary(study)
    if not rows:
        return lines + ["no finished trial yet"]
    best = rows[0]
    speed = f", ideal speed-up {best.speedup:.2f}x" if best.speedup else ""
    lines.append(f"best     trial {best.trial}: val {best.accuracy:.4f}  {best.note}{speed}")
    for r in rows[1:]:
        gap = (best.accuracy or 0.0) - (r.accuracy or 0.0)
        if r.label == "backprop":
            verdict = "beats" if gap > 0 else "does not beat"
            lines.append(f"backprop ({r.note}): val {r.accuracy:.4f}  (best {gap:+.4f}: "
                         f"the search {verdict} end-to-end BP)")
        else:
            state = f", {r.note}" if r.note else ""
            versus = "" if r.trial == best.trial else f"  (best {gap:+.4f})"
            lines.append(f"{r.label:8s} trial {r.trial}: val {r.accuracy:.4f}{state}{versus}")
    return lines
