"""Confirmed winners: after the search, its best trials are trained again over more seeds.

One seed crowns lucky winners (a ResNet-18 winner scored .795, .761 and .763 over three). Once
the study's budget is used, the ``confirm_top`` best feasible trials by single-seed accuracy
(on the feasible Pareto front, in a multi-objective study), the reference trials and end-to-end
BP at its best learning rate are each trained ``confirm_seeds`` more times at the trial budget,
on the same data and validation split, with seeds ``seed + 1``, ``seed + 2``, ... for both the
initial weights and the data order. The results go to the study (reports.seed_record.Confirmation)
after every training, so Ctrl-C loses at most the one running, and a rerun trains only what is
missing. The ranking then uses the mean (reports.record.ranked).

Promotion (``--promote-top N``): before that, the N best feasible trials by single-seed
accuracy, the reference trials and BP are trained at a higher fidelity (``--promote-epochs``,
``--promote-subset``: more epochs, more training images, the same validation split) from the
study's seed, and stored per fidelity (reports.study_attrs.PROMOTED). They then rank first, by
that accuracy (reports.record.ranked: a trial ranks by the highest fidelity it has), and the
confirmation seeds run at that fidelity, on the ``confirm_top`` best promoted trials by their
mean, the references and BP; since a confirmed trial's mean moves, this repeats until the
``confirm_top`` best all hold their seeds. A rerun trains only what is missing.

These trainings do not count against ``--n-trials``; their count and time are reported apart.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from bwbpf.reports.pareto import nondominated
from bwbpf.reports.record import TrialRecord, feasible_trials
from bwbpf.reports.seed_record import Confirmation, Fidelity, fidelity_shown
from bwbpf.reports.study_attrs import (
    bp_baselines,
    budget_confirmations,
    promoted,
    save_confirmation,
)
from bwbpf.search.run.baselines import bp_decoupling, bp_plan
from bwbpf.search.study import budget
from bwbpf.search.study.settings import MAX_SEED, SearchSettings
from bwbpf.search.trial.objective import trial_plan, write_note
from bwbpf.spaces import Decoupling, build
from bwbpf.trainers import Data, NonFiniteLoss, OutOfMemory, TrainPlan, fit, memory_guard

log = logging.getLogger("bwbpf.search")


class Candidate(NamedTuple):
    """One config to confirm: a trial, or BP on ``backbone`` (``trial`` None)."""

    label: str  # "trial 7", "paper (trial 0)", "BP vgg8b"
    trial: FrozenTrial | None
    backbone: str
    decoupling: Decoupling
    plan: TrainPlan  # its seed is replaced for each training
    own: float  # the single-seed accuracy, at the study's seed


def extra_seeds(s: SearchSettings) -> list[int]:
    return [(s.seed + i) % (MAX_SEED + 1) for i in range(1, s.confirm_seeds + 1)]


def top_trials(study: optuna.Study, s: SearchSettings, n: int | None = None,
               fidelity: Fidelity | None = None) -> list[FrozenTrial]:
    """The ``n`` (default ``confirm_top``) most accurate feasible complete trials: at their
    single seed (the figure every trial has: the set stays the same on a rerun, so it
    resumes), or, at a promoted ``fidelity``, among the trials promoted there by their mean."""
    pool = feasible_trials(study)
    if s.multi_objective:
        maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
        # the front of the objectives on single seeds, so that a rerun picks the same trials
        pool = [t for t, on in zip(pool, nondominated([t.values for t in pool], maximize))
                if on]
    n = s.confirm_top if n is None else n
    if fidelity is None:
        return sorted(pool, key=lambda t: (-t.values[0], t.number))[:n]
    there = promoted(study, fidelity)
    pool = [t for t in pool if str(t.number) in there]
    return sorted(pool, key=lambda t: (-there[str(t.number)].mean, t.number))[:n]


def candidates(study: optuna.Study, s: SearchSettings, top: list[FrozenTrial],
               fidelity: Fidelity | None = None) -> list[Candidate]:
    """``top``, the complete reference trials (feasible or not: the summary shows them), and
    BP on every backbone that has its baseline; trained at ``fidelity`` (None: the trial
    budget)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    chosen = {t.number for t in top}
    refs = [t for t in done if TrialRecord.of(t).baseline and t.number not in chosen]
    epochs = s.epochs if fidelity is None else fidelity[0]
    out = []
    for t in top + refs:
        rec = TrialRecord.of(t)
        d = rec.decoupling()
        if d is None:
            continue  # made by hand, not by `run`: nothing to train
        label = f"{rec.baseline} (trial {t.number})" if rec.baseline else f"trial {t.number}"
        out.append(Candidate(label, t, d.backbone, d,
                             replace(trial_plan(s, s.seed), epochs=epochs), t.values[0]))
    for backbone, bp in bp_baselines(study).items():
        d = bp_decoupling(s, backbone, bp.best_lr)
        out.append(Candidate(f"BP {backbone}", None, backbone, d,
                             replace(bp_plan(s, s.seed), epochs=epochs), bp.val_accuracy))
    return out


def stored(study: optuna.Study, s: SearchSettings, c: Candidate,
           fidelity: Fidelity | None = None) -> Confirmation:
    """What the study holds for ``c``: at the trial budget at least its own seed; at a
    promoted fidelity, what was trained there (maybe nothing yet)."""
    number = None if c.trial is None else c.trial.number
    if fidelity is not None:
        what = str(number) if number is not None else f"bp:{c.backbone}"
        return promoted(study, fidelity).get(what) or Confirmation(number, (), (), fidelity)
    have = (bp_baselines(study)[c.backbone].confirmation() if c.trial is None
            else budget_confirmations(study).get(c.trial.number))
    return have or Confirmation(number, (s.seed,), (round(c.own, 5),))


def train(c: Candidate, data: Data, seed: int) -> float:
    """One training of ``c`` from ``seed``: its validation accuracy after the last epoch."""
    net = build(c.decoupling, data.num_classes, data.in_channels, data.image_size, seed=seed)
    return round(fit(net, data, replace(c.plan, seed=seed)).val_accuracy, 5)


def todo(study: optuna.Study, s: SearchSettings, cands: list[Candidate], seeds: list[int],
         fidelity: Fidelity | None = None) -> list[tuple[Candidate, int]]:
    """(candidate, seed) of every training missing, seed by seed: each candidate has its next
    seed before any has two more, so an interrupted run leaves them comparable."""
    have = [set(stored(study, s, c, fidelity).seeds) for c in cands]
    return [(c, seed) for seed in seeds for c, h in zip(cands, have) if seed not in h]


def confirm_one(study: optuna.Study, s: SearchSettings, data: Data, c: Candidate, seed: int,
                fidelity: Fidelity | None = None) -> int:
    """Trains ``c`` on ``seed`` and stores it (1), or says why it could not (0)."""
    began = time.monotonic()
    try:
        with memory_guard(f"confirming {c.label} on seed {seed}"):
            acc = train(c, data, seed)
    except (NonFiniteLoss, OutOfMemory) as e:
        log.warning("%s, seed %d: not confirmed (%s); a rerun tries again", c.label, seed,
                    str(e).splitlines()[0])
        return 0
    conf = stored(study, s, c, fidelity)  # read again: another process may have added one
    if seed not in conf.seeds:
        conf = conf.with_seed(seed, acc)
        save_confirmation(study, conf, backbone=c.backbone)
    if not s.quiet:
        log.info("confirm %s seed %d: val %.4f (%.1f s); %s", c.label, seed, acc,
                 time.monotonic() - began, conf.shown())
    if c.trial is not None:
        write_note(study, c.trial, conf)
    return 1


def confirm(study: optuna.Study, s: SearchSettings, data: Data, *,
            deadline: float | None = None,
            promoted_data: Callable[[], Data] | None = None) -> int:
    """Trains what is missing of the study's promotions and confirmations (see the module
    docstring), none after ``deadline`` (time.monotonic); returns the number of trainings
    done. ``promoted_data``: loads the data at the promoted fidelity (with --promote-top)."""
    fid = s.promotion
    if s.confirm_top == 0 and fid is None:
        return 0
    if budget.used(study) < s.n_trials:
        log.info("confirmation waits for the search budget (%d of %d trials): rerun to finish",
                 budget.used(study), s.n_trials)
        return 0
    if fid is None:
        jobs = todo(study, s, candidates(study, s, top_trials(study, s)), extra_seeds(s))
        return run_jobs(study, s, data, jobs, "confirm", deadline)
    assert promoted_data is not None
    top = top_trials(study, s, s.promote_top)
    jobs = todo(study, s, candidates(study, s, top, fid), [s.seed], fid)
    more = [] if s.confirm_top == 0 else extra_seeds(s)
    if not jobs and not todo(study, s, candidates(study, s, top_trials(
            study, s, fidelity=fid), fid), more, fid):
        return 0
    data_hi = promoted_data()
    done = run_jobs(study, s, data_hi, jobs, "promote", deadline, fid)
    # The top by promoted mean moves as seeds are added (a lucky single seed regresses, and
    # the next one up enters the top): confirm until the top N all hold their seeds, so the
    # study a run leaves is the one a rerun finds (a rerun trains nothing). Each pass adds a
    # seed to at least one promoted trial, or stops.
    while more and (deadline is None or time.monotonic() < deadline):
        cands = candidates(study, s, top_trials(study, s, fidelity=fid), fid)
        jobs = todo(study, s, cands, more, fid)
        trained = run_jobs(study, s, data_hi, jobs, "confirm", deadline, fid)
        done += trained
        if trained == 0:  # nothing left, or what is left cannot train (logged)
            break
    return done


def run_jobs(study: optuna.Study, s: SearchSettings, data: Data,
             jobs: list[tuple[Candidate, int]], verb: str, deadline: float | None,
             fidelity: Fidelity | None = None) -> int:
    """The trainings ``jobs``, each stored as it ends; its own log lines (verb: confirm or
    promote) and budget line."""
    if not jobs:
        return 0
    cands = list({c.label: c for c, _ in jobs}.values())
    if verb == "promote":
        what = f"{plural(len(cands), 'config')} at {fidelity_shown(fidelity or (0, 0))}"
    else:
        what = describe_jobs(cands, s.confirm_seeds)
        if fidelity is not None:
            what += f" at {fidelity_shown(fidelity)}"
    doing, done_ = {"promote": ("promoting", "promoted"),
                    "confirm": ("confirming", "confirmed")}[verb]
    log.info("%s %s: %s", doing, what, plural(len(jobs), "training"))
    start, done = time.monotonic(), 0
    for i, (c, seed) in enumerate(jobs):
        if deadline is not None and time.monotonic() >= deadline:
            log.info("--timeout: %d %s trainings left; rerun to finish", len(jobs) - i,
                     "promotion" if verb == "promote" else "confirmation")
            break
        done += confirm_one(study, s, data, c, seed, fidelity)
    log.info("%s %s: %s, %.0f s", done_, what, plural(done, "training"),
             time.monotonic() - start)
    return done


def describe_jobs(cands: list[Candidate], seeds: int) -> str:
    """"4 decouplings and BP over 2 more seeds"."""
    n = sum(1 for c in cands if c.trial is not None)
    bps = len(cands) - n
    parts = [plural(n, "decoupling")] if n else []
    parts += ["BP" if bps == 1 else f"BP on {bps} backbones"] if bps else []
    return f"{' and '.join(parts)} over {plural(seeds, 'more seed')}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
