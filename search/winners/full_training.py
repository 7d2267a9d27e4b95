"""`bwbpf-search train`: full training of one decoupling (and the BP baseline) with results,
checkpoints and per-epoch metrics on disk, resumable after a crash or a kill."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch

from bwbpf.search.trial.costs import run_costs
from bwbpf.search.winners.run_folder import write_epochs
from bwbpf.spaces import (
    BlockOptim,
    Decoupling,
    SearchSpace,
    UserError,
    build,
    is_named,
    to_document,
)
from bwbpf.spaces.decoupling import read_document
from bwbpf.spaces.document import Trained
from bwbpf.spaces.limits import CostModel
from bwbpf.trainers import (
    Data,
    EpochMetrics,
    NonFiniteLoss,
    TrainPlan,
    TrainResult,
    evaluate,
    fit,
    measure_cost,
    resolve_device,
)
from bwbpf.trainers.checkpoint import load_checkpoint, save_checkpoint
from bwbpf.trainers.cost import block_groups
from bwbpf.trainers.distributed import Sizes, evaluate_ranked, fit_ranked
from bwbpf.trainers.group import Group, ranges_of
from bwbpf.trainers.shards import Shards

log = logging.getLogger("bwbpf.search")


class StopAfter(Exception):
    """Raised after the epoch --stop-after names: the run ends resumable."""


class Diverged(RuntimeError):
    """A run's loss became NaN or inf; the message is the one line `train` ends with (exit 1):
    which run, block, epoch and step, and the flag to lower."""


def load_arch(arch: str, backbone: str | None, width: float | None, lr: float
              ) -> tuple[Decoupling, Trained, dict[str, Any] | None]:
    """paper / uniform for a backbone, or an exported file; returns the decoupling, what the
    file says of how it was found (nothing for built-ins), and the file's document (None for
    built-ins). A file's decoupling is as written: ``carry_arch`` moves it to another backbone
    or width."""
    if arch in ("paper", "uniform"):
        # the search's default net (SearchSpace), so a trained baseline matches a default run
        b = backbone or SearchSpace.backbones[0]
        w = width or (1.0 if is_named(b) else SearchSpace.width)  # named: as built
        make = Decoupling.paper_default if arch == "paper" else Decoupling.uniform
        return make(b, width=w, optim=BlockOptim(lr=lr)), Trained(), None
    path = Path(arch)
    if not path.is_file():
        raise UserError(f"--arch {arch}: not 'paper', 'uniform' or an existing JSON file")
    d, doc = read_document(path, "--arch")
    return d, Trained.of(doc), doc


def check_fits(decouplings: list[Decoupling], data: Data) -> None:
    """Builds every net once without memory (the meta device): a decoupling that cannot take
    this data is refused before anything is written."""
    for d in decouplings:
        with torch.device("meta"):
            build(d, data.num_classes, data.in_channels, data.image_size)


def train_one(d: Decoupling, data: Data, plan: TrainPlan, out: Path, label: str, *,
              resume: bool, stop_after: int | None, cost_model: CostModel
              ) -> dict[str, Any] | None:
    """Trains (or resumes) into ``out``; None when stopped by --stop-after."""
    ckpt = out / "checkpoint.pt"
    state = load_checkpoint(ckpt) if resume and ckpt.is_file() else None
    net = build(d, data.num_classes, data.in_channels, data.image_size, seed=plan.seed)
    costs = run_costs(d, measure_cost(net, data.in_channels, data.image_size), cost_model,
                      device=resolve_device(plan.device), batch=plan.batch_size,
                      in_channels=data.in_channels, image_size=data.image_size,
                      num_classes=data.num_classes)
    if state:
        log.info("%s: resuming after epoch %d", label, state["epoch"])
    elif resume:
        log.info("%s: --resume: no checkpoint in %s; starting at epoch 1", label, out)

    def checkpoint(snap: dict[str, Any]) -> None:
        save_checkpoint(snap, ckpt)
        write_epochs(out, snap["history"])

    try:
        result = fit(net, data, plan, on_epoch=reporter(label, plan, stop_after), resume=state,
                     on_checkpoint=checkpoint)
    except StopAfter:
        return None
    except NonFiniteLoss as e:  # its message names the block, the epoch and the step
        flag = "--bp-lr" if label == "backprop" else "--lr"
        raise Diverged(f"{label} training diverged: {e}; try a lower {flag}") from None
    return run_outcome(d, costs, result, evaluate(net, data.test, plan))


def train_ranked(d: Decoupling, data: Data | None, sizes: Sizes, plan: TrainPlan, out: Path,
                 label: str, group: Group, blocks_per_rank: tuple[int, ...] | None, *,
                 resume: bool,
                 stop_after: int | None, cost_model: CostModel) -> dict[str, Any] | None:
    """``train_one`` for one rank of a distributed run (rank 0 holds the data): every rank
    trains its blocks and writes its checkpoint shards into ``out``; rank 0 also the
    per-epoch metrics. The blocks are spread by ``blocks_per_rank``, else
    balanced by their FLOPs."""
    net = build(d, sizes.num_classes, sizes.in_channels, sizes.image_size, seed=plan.seed)
    cost = measure_cost(net, sizes.in_channels, sizes.image_size)
    group.ranges = tuple(ranges_of(blocks_per_rank) if blocks_per_rank
                         else block_groups(cost.block_flops, group.world))
    report = reporter(label, plan, stop_after) if group.first else stopper(plan, stop_after)

    def checkpoint(snap: dict[str, Any]) -> None:
        if group.first:
            write_epochs(out, snap["history"])

    out.mkdir(parents=True, exist_ok=True)  # a rank on another machine may have none yet
    try:
        result, step = fit_ranked(net, data, sizes, plan, group, Shards(out, group),
                                  resume=resume, on_epoch=report, on_checkpoint=checkpoint)
    except StopAfter:
        return None
    test = evaluate_ranked(step, data.test if data is not None else None, sizes.test)
    if not group.first:  # only rank 0's outcome is written
        return {}
    return run_outcome(d, run_costs(d, cost, cost_model, device=resolve_device(plan.device),
                                batch=plan.batch_size, in_channels=sizes.in_channels,
                                image_size=sizes.image_size, num_classes=sizes.num_classes),
                   result, test)


def reporter(label: str, plan: TrainPlan, stop_after: int | None
             ) -> Callable[[int, EpochMetrics], None]:
    """The per-epoch callback: one log line, and StopAfter after the --stop-after epoch."""

    def report(epoch: int, m: EpochMetrics) -> None:
        blocks = " ".join(f"{a:.3f}" for a in m.block_val_accuracy)
        log.info("%s epoch %d/%d: val %.4f (blocks %s) %.0f img/s", label, epoch, plan.epochs,
                 m.val_accuracy, blocks, m.images_per_second)
        stopper(plan, stop_after)(epoch, m)

    return report


def stopper(plan: TrainPlan, stop_after: int | None) -> Callable[[int, EpochMetrics], None]:
    """StopAfter after the --stop-after epoch (unless it is the last)."""

    def stop(epoch: int, m: EpochMetrics) -> None:
        if stop_after is not None and epoch >= stop_after and epoch < plan.epochs:
            raise StopAfter

    return stop


def run_outcome(d: Decoupling, costs: dict[str, Any], result: TrainResult, test: list[float]
            ) -> dict[str, Any]:
    """A finished run's entry in metrics.json: accuracies, then its costs (``run_costs``)."""
    return {
        "test_accuracy": test[-1], "block_test_accuracy": test,
        "val_accuracy": result.val_accuracy, "epochs": len(result.history),
        "train_seconds": result.train_seconds, **costs,
        "device": result.device, "peak_memory_bytes": result.peak_memory_bytes,
        "decoupling": to_document(d),
    }


def bp_for(d: Decoupling, lr: float) -> Decoupling:
    """End-to-end BP on the same backbone and width, SGD at ``lr`` with d's weight decay."""
    wd = d.optim[-1].weight_decay
    return Decoupling.end_to_end(d.backbone, width=d.width,
                                 optim=BlockOptim(lr=lr, weight_decay=wd,
                                                  optimizer=d.optim[-1].optimizer))
