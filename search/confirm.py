"""Confirmed winners: after the search, its best trials are trained again over more seeds.

One seed crowns lucky winners (a ResNet-18 winner scored .795, .761 and .763 over three). Once
the study's budget is used, the ``confirm_top`` best feasible trials by single-seed accuracy
(on the feasible Pareto front, in a multi-objective study), the reference trials and end-to-end
BP at its best learning rate are each trained ``confirm_seeds`` more times at the trial budget,
on the same data and validation split, with seeds ``seed + 1``, ``seed + 2``, ... for both the
initial weights and the data order. The results go to the study (reports.study_attrs.Confirmation)
after every training, so Ctrl-C loses at most the one running, and a rerun trains only what is
missing. The ranking then uses the mean (reports.record.ranked).

These trainings do not count against ``--n-trials``; their count and time are reported apart.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import NamedTuple

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from bwbpf.reports.record import TrialRecord, feasible_trials, nondominated
from bwbpf.reports.study_attrs import (
    Confirmation,
    bp_baselines,
    bp_confirmation,
    confirmations,
    save_confirmation,
)
from bwbpf.search import budget
from bwbpf.search.baselines import bp_decoupling, bp_plan
from bwbpf.search.objective import trial_plan, write_note
from bwbpf.search.settings import MAX_SEED, SearchSettings
from bwbpf.spaces import Decoupling, build
from bwbpf.trainers import Data, NonFiniteLoss, TrainPlan, fit

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


def top_trials(study: optuna.Study, s: SearchSettings) -> list[FrozenTrial]:
    """The ``confirm_top`` most accurate feasible complete trials at their single seed (the
    figure every trial has: the set stays the same on a rerun, so it resumes)."""
    pool = feasible_trials(study)
    if s.multi_objective:
        maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
        pool = [pool[i] for i in nondominated([t.values for t in pool], maximize)]
    return sorted(pool, key=lambda t: (-t.values[0], t.number))[:s.confirm_top]


def candidates(study: optuna.Study, s: SearchSettings) -> list[Candidate]:
    """The top trials, the complete reference trials (feasible or not: the summary shows
    them), and BP on every backbone that has its baseline."""
    top = top_trials(study, s)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    chosen = {t.number for t in top}
    refs = [t for t in done if TrialRecord.of(t).baseline and t.number not in chosen]
    out = []
    for t in top + refs:
        rec = TrialRecord.of(t)
        d = rec.decoupling()
        if d is None:
            continue  # made by hand, not by `run`: nothing to train
        label = f"{rec.baseline} (trial {t.number})" if rec.baseline else f"trial {t.number}"
        out.append(Candidate(label, t, d.backbone, d, trial_plan(s, s.seed), t.values[0]))
    for backbone, bp in bp_baselines(study).items():
        d = bp_decoupling(s, backbone, bp.best_lr)
        out.append(Candidate(f"BP {backbone}", None, backbone, d, bp_plan(s, s.seed),
                             bp.val_accuracy))
    return out


def stored(study: optuna.Study, s: SearchSettings, c: Candidate) -> Confirmation:
    """What the study holds for ``c``: at least its own seed."""
    number = None if c.trial is None else c.trial.number
    have = bp_confirmation(study, c.backbone) if c.trial is None else \
        confirmations(study).get(c.trial.number)
    return have or Confirmation(number, (s.seed,), (round(c.own, 5),))


def train(c: Candidate, data: Data, seed: int) -> float:
    """One training of ``c`` from ``seed``: its validation accuracy after the last epoch."""
    net = build(c.decoupling, data.num_classes, data.in_channels, data.image_size, seed=seed)
    return round(fit(net, data, replace(c.plan, seed=seed)).val_accuracy, 5)


def todo(study: optuna.Study, s: SearchSettings) -> list[tuple[Candidate, int]]:
    """(candidate, seed) of every training missing, seed by seed: each candidate has its next
    seed before any has two more, so an interrupted run leaves them comparable."""
    cands = candidates(study, s)
    have = [set(stored(study, s, c).seeds) for c in cands]
    return [(c, seed) for seed in extra_seeds(s) for c, h in zip(cands, have) if seed not in h]


def confirm_one(study: optuna.Study, s: SearchSettings, data: Data, c: Candidate, seed: int
                ) -> int:
    """Trains ``c`` on ``seed`` and stores it (1), or says why it could not (0)."""
    began = time.monotonic()
    try:
        acc = train(c, data, seed)
    except (NonFiniteLoss, torch.OutOfMemoryError) as e:
        torch.cuda.empty_cache()
        log.warning("%s, seed %d: not confirmed (%s); a rerun tries again", c.label, seed,
                    str(e).splitlines()[0])
        return 0
    conf = stored(study, s, c)  # read again: another process may have added a seed
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
            deadline: float | None = None) -> int:
    """Trains what is missing of the study's confirmations (see the module docstring), none
    after ``deadline`` (time.monotonic); returns the number of trainings done."""
    if s.confirm_top == 0:
        return 0
    if budget.used(study) < s.n_trials:
        log.info("confirmation waits for the search budget (%d of %d trials): rerun to finish",
                 budget.used(study), s.n_trials)
        return 0
    jobs = todo(study, s)
    if not jobs:
        return 0
    what = describe(list({c.label: c for c, _ in jobs}.values()), s.confirm_seeds)
    log.info("confirming %s: %s", what, plural(len(jobs), "training"))
    start, done = time.monotonic(), 0
    for i, (c, seed) in enumerate(jobs):
        if deadline is not None and time.monotonic() >= deadline:
            log.info("--timeout: %d confirmation trainings left; rerun to finish", len(jobs) - i)
            break
        done += confirm_one(study, s, data, c, seed)
    log.info("confirmed %s: %s, %.0f s", what, plural(done, "training"),
             time.monotonic() - start)
    return done


def describe(cands: list[Candidate], seeds: int) -> str:
    """"4 decouplings and BP over 2 more seeds"."""
    n = sum(1 for c in cands if c.trial is not None)
    bps = len(cands) - n
    parts = [plural(n, "decoupling")] if n else []
    parts += ["BP" if bps == 1 else f"BP on {bps} backbones"] if bps else []
    return f"{' and '.join(parts)} over {plural(seeds, 'more seed')}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
