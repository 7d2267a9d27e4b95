"""What every study is measured against: reference decouplings and the end-to-end BP run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import TrialState

from bwbpf.reports.record import TrialRecord
from bwbpf.reports.study_attrs import (
    BPBaseline,
    bp_baselines,
    bp_sweep_points,
    save_bp_baseline,
    save_bp_sweep_points,
)
from bwbpf.search.study import budget
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.study.stored_settings import StoredSettings
from bwbpf.search.trial.placement import Placer
from bwbpf.search.winners.full_training import Diverged
from bwbpf.spaces import (
    BlockOptim,
    ConfigError,
    Decoupling,
    SearchSpace,
    build,
    params_for,
    reference_decouplings,
)
from bwbpf.spaces.copied_heads import pyramidal_depth
from bwbpf.spaces.decoupling import MAX_LR
from bwbpf.spaces.encoding import Draw
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.losses import LocalLoss
from bwbpf.trainers import Data, NonFiniteLoss, TrainPlan, fit

log = logging.getLogger("bwbpf.search")


@dataclass(frozen=True)
class Published:
    """A published design: its head family and local loss on every block, the depth of the
    first head (0: the family's deepest searched), AugLocal's pyramid coefficient, and the
    lighter loss the paper itself reports, for where its own fits no placement."""

    family: str
    loss: LocalLoss
    depth: int = 1
    pyramid: float = 0.0
    lighter_loss: LocalLoss | None = None


# The published designs, each a reference trial at its best feasible placement. PredSim
# (Nokland & Eidnes 2019): pooled linear prediction with the similarity loss, and the
# prediction loss alone (the paper's "pred" variant; the similarity term's costs break the
# constraints on small nets such as vgg8b x0.25 at 2x and 0.6); AugLocal (Ma et al. 2024): a
# pyramid of copied downstream units; InfoPro (Wang et al. 2021): conv heads with the
# reconstruction loss and its lambda schedule.
PUBLISHED: dict[str, Published] = {
    "predsim": Published("pool_linear", "predsim", lighter_loss="pred"),
    "auglocal": Published("downstream", "pred", depth=0, pyramid=0.5),
    "infopro": Published("conv", "infopro")}


def published(space: SearchSpace, placer: Placer, names: Sequence[str] = tuple(PUBLISHED)
              ) -> dict[str, Decoupling]:
    """The published designs the space can express, each at the cut set with the best
    speed-up among those that meet the constraints (over K, the references' K first), as
    published or, where that fits nowhere, with shallower then narrower heads, then with the
    paper's lighter loss; at the paper's cuts, to be marked infeasible, where no variant
    fits."""
    paper = reference_decouplings(space)["paper"]
    k0, out = paper.num_blocks, {}
    for name, p in PUBLISHED.items():
        if name not in names:
            continue
        if p.family not in space.heads or p.loss not in space.losses:
            log.warning("baseline %s skipped: the space has no %s head or %s loss", name,
                        p.family, p.loss)
            continue
        fam = AUX_HEADS.get(p.family)
        ks = sorted(range(space.min_blocks, space.max_blocks + 1), key=lambda k: abs(k - k0))
        widths = sorted({1.0 if 1.0 in space.head_widths else min(space.head_widths),
                         min(space.head_widths)}, reverse=True)
        losses = [p.loss] + ([p.lighter_loss] if p.lighter_loss in space.losses else [])
        # the design as published first, then lighter (shallower, narrower, the lighter loss)
        # until one fits
        tries = [_design(space, paper, p.family, loss, d, w, p.pyramid) for loss in losses
                 for d in range(p.depth or fam.max_searched_depth, 0, -1) for w in widths]
        out[name] = next((d for d in (placer.best(t, ks) for t in tries) if d is not None),
                         tries[0](k0).decoupling(paper.cuts))
    return out


def _design(space: SearchSpace, paper: Decoupling, family: str, loss: LocalLoss, depth: int,
            width: float, pyramid: float) -> Callable[[int], Draw]:
    """A published design as a draw of K blocks: its head on every block (a pyramid's depth
    falling from ``depth``), the references' learning rate."""

    def design(k: int) -> Draw:
        heads = tuple((family, pyramidal_depth(depth, i, k, pyramid) if pyramid else depth,
                       width, loss) for i in range(space.max_blocks - 1))
        n = space.max_blocks
        return Draw(space, paper.backbone, k, (0.5,) * (n - 1), heads, paper.optim[0].lr,
                    (1.0,) * n, paper.optim[0].weight_decay)

    return design


def enqueue_references(study: optuna.Study, s: SearchSettings, placer: Placer) -> list[str]:
    """Queues each reference decoupling (the paper's, the uniform one, the published designs)
    that has neither a finished trial that used budget nor a WAITING or RUNNING one: a new
    study's first trials, and on a rerun those that were interrupted (or found surplus), so
    summaries show them all."""
    trials = study.get_trials(deepcopy=False)
    spent = {t.number for t in budget.using(trials)}
    have = {TrialRecord.of(t).baseline for t in trials if t.number in spent
            or t.state in (TrialState.WAITING, TrialState.RUNNING)}
    # a study stored before a reference existed keeps the references it had
    stored = StoredSettings.of(study)
    wanted = [r for r in (stored.meant("references") if stored.predates("references")
                          else s.references) if r not in have]
    queued = []
    refs = {**reference_decouplings(s.space), **published(s.space, placer, wanted)}
    for name, d in refs.items():
        if name not in wanted:
            continue
        try:
            params = params_for(d, s.space)
        except ConfigError as e:
            log.warning("baseline %s skipped: %s", name, e)
            continue
        # Not skip_if_exists: an interrupted trial with these parameters must not stop it.
        study.enqueue_trial(params, user_attrs=TrialRecord(baseline=name).attrs())
        queued.append(name)
    return queued


MAX_EXTRA_LRS = 2  # sweep points added beyond an edge that wins


def bp_decoupling(s: SearchSettings, backbone: str, lr: float) -> Decoupling:
    """End-to-end BP on ``backbone`` at the space's width, weight decay and optimiser."""
    optim = BlockOptim(lr=lr, weight_decay=s.space.middle_weight_decay,
                       optimizer=s.space.optimizer)
    return Decoupling.end_to_end(backbone, width=s.space.width, optim=optim)


def bp_plan(s: SearchSettings, seed: int) -> TrainPlan:
    """BP's training at the trial budget (one block: the sequential schedule), augmented and
    scheduled as the trials are."""
    return TrainPlan(epochs=s.epochs, batch_size=s.batch_size, seed=seed, device=s.device,
                     augment=s.space.augment, lr_schedule=s.space.lr_schedule)


def bp_baseline(s: SearchSettings, data: Data, backbone: str,
                done: Sequence[dict[str, Any]] = (),
                on_point: Callable[[list[dict[str, Any]]], None] | None = None) -> BPBaseline:
    """End-to-end BP on the same backbone, data and epochs; its learning rate is the best of a
    small sweep on the validation split, so the comparison is fair to BP. When an end of the
    sweep wins, the sweep goes one step (x2 or /2) further that way, at most twice. A rate
    whose training diverges is a point too (val_accuracy None), never the winner. The points
    in ``done`` (an interrupted sweep's) are not trained again; ``on_point`` gets the sweep
    after each point trained here."""
    plan = bp_plan(s, s.seed)
    have = {p["lr"]: p for p in done if "lr" in p}
    sweep: list[dict[str, Any]] = []
    todo = sorted(set(s.bp_lrs))
    while todo:
        lr = todo.pop(0)
        if lr in have:
            sweep.append(have[lr])
            log.info("BP baseline %s lr %g: as an earlier run trained it", backbone, lr)
        else:
            sweep.append(train_sweep_point(s, data, backbone, lr, plan))
            if on_point is not None:
                on_point(sweep)
        nxt = None if todo else further(s, sweep)
        if nxt is not None:
            todo.append(nxt)
    return winner(s, backbone, sweep)


def train_sweep_point(s: SearchSettings, data: Data, backbone: str, lr: float, plan: TrainPlan
                ) -> dict[str, Any]:
    """One BP training of the sweep, as stored; one that diverges says where (the step's
    NonFiniteLoss) in ``diverged``, its val_accuracy None."""
    net = build(bp_decoupling(s, backbone, lr), data.num_classes, data.in_channels,
                data.image_size, seed=s.seed)
    began = time.monotonic()
    try:
        r = fit(net, data, plan)
    except NonFiniteLoss as e:
        # info, as every point: the summary counts it, and a sweep where all diverge ends
        # in its one line
        log.info("BP baseline %s lr %g diverged: %s", backbone, lr, e)
        return {"lr": lr, "val_accuracy": None, "diverged": str(e),
                "train_seconds": round(time.monotonic() - began, 2)}
    log.info("BP baseline %s lr %g: val %.4f", backbone, lr, r.val_accuracy)
    return {"lr": lr, "val_accuracy": round(r.val_accuracy, 5),
            "curve": [round(m.val_accuracy, 5) for m in r.history],
            "train_seconds": round(r.train_seconds, 2)}


def further(s: SearchSettings, sweep: list[dict[str, Any]]) -> float | None:
    """The next rate when an end of the sweep wins (the best that trained at the lowest or
    highest rate tried), while the sweep has room for it; else None."""
    trained = [p for p in sweep if p.get("val_accuracy") is not None]
    if not trained or not 1 < len(sweep) < len(s.bp_lrs) + MAX_EXTRA_LRS:
        return None
    lrs = sorted(p["lr"] for p in sweep)
    top = max(trained, key=lambda p: p["val_accuracy"])["lr"]
    if top not in (lrs[0], lrs[-1]):
        return None
    nxt = top / 2 if top == lrs[0] else top * 2
    return nxt if 0 < nxt <= MAX_LR else None


class SweepDiverged(Diverged):
    """End-to-end BP diverged at every rate of its sweep: --bp-lrs asks too much. A runtime
    fault (exit 1), not refused input: the study and its diverged points are stored by then,
    so a rerun with other rates trains only those."""


def winner(s: SearchSettings, backbone: str, sweep: list[dict[str, Any]]) -> BPBaseline:
    trained = [p for p in sweep if p.get("val_accuracy") is not None]
    if not trained:
        lrs = ",".join(f"{p['lr']:g}" for p in sweep)
        why = sweep[0].get("diverged", "diverged")
        raise SweepDiverged(f"--bp-lrs {lrs}: end-to-end BP on {backbone} diverged at every "
                            f"rate (at lr {sweep[0]['lr']:g}: {why}); give smaller rates")
    best = max(trained, key=lambda p: p["val_accuracy"])
    return BPBaseline(backbone=backbone, width=s.space.width, epochs=s.epochs,
                      weight_decay=s.space.middle_weight_decay, best_lr=best["lr"],
                      val_accuracy=best["val_accuracy"], curve=tuple(best.get("curve", ())),
                      sweep=tuple(sweep))


def ensure_bp_baselines(study: optuna.Study, s: SearchSettings, data: Data) -> None:
    """The BP baseline of every backbone the study lacks; each sweep point is stored as it
    ends, so a rerun after an interruption trains only the points still missing."""
    stored = bp_baselines(study)
    for backbone in s.space.backbones:
        if backbone in stored:
            continue
        head = {"backbone": backbone, "width": s.space.width, "epochs": s.epochs,
                "weight_decay": s.space.middle_weight_decay}
        done = bp_sweep_points(study, backbone, head)
        bp = bp_baseline(s, data, backbone, done,
                         partial(save_bp_sweep_points, study, backbone, head))
        save_bp_baseline(study, backbone, bp)
