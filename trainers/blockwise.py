"""The BP-free block-wise trainer (and, with one block, the end-to-end BP baseline).

Block k receives the *detached* output of block k-1, computes its loss through its own head,
and steps its own optimiser right after its backward, so its graph is freed before block k+1
runs: no gradient crosses a block boundary and one block's activations are alive at a time.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from bwbpf.spaces import DecoupledNet
from bwbpf.trainers.checkpoint import restore, snapshot
from bwbpf.trainers.data import Data, Split, eval_batches
from bwbpf.trainers.device import (
    autocast,
    nhwc,
    nhwc_module,
    resolve_device,
    seeded_streams,
    synchronize,
)
from bwbpf.trainers.pipeline import PipelinedStepper
from bwbpf.trainers.plan import EpochMetrics, TrainPlan, TrainResult
from bwbpf.trainers.stepper import Stepper, check_finite

EpochCallback = Callable[[int, EpochMetrics], None]


def prepare(net: DecoupledNet, data: Data, plan: TrainPlan) -> tuple[DecoupledNet, Data]:
    """Puts net and data on the plan's device, the net in channels_last (``device.nhwc``)."""
    device = resolve_device(plan.device)
    net = nhwc_module(net.to(device))
    if plan.compile:
        for k in range(net.num_blocks):
            net.blocks[k].compile(dynamic=False)
            net.head(k).compile(dynamic=False)
    return net, data.to(device)


def fit(net: DecoupledNet, data: Data, plan: TrainPlan, on_epoch: EpochCallback | None = None,
        *, resume: dict[str, Any] | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Trains ``net`` on ``data.train``; after every epoch evaluates every head on ``data.val``,
    hands ``on_checkpoint`` the full training state (see ``trainers.checkpoint``) and calls
    ``on_epoch(epoch, metrics)``, which may raise to stop (e.g. to prune). With ``resume`` (a
    state from ``on_checkpoint``) training continues where it stopped, with the same arithmetic
    as an uninterrupted run. The global random generators are seeded for the training and
    left as they were."""
    used = [resolve_device(d) for d in (plan.devices or (plan.device,))]
    with seeded_streams(plan.seed, used):
        return _fit(net, data, plan, on_epoch, resume, on_checkpoint)


def _fit(net: DecoupledNet, data: Data, plan: TrainPlan, on_epoch: EpochCallback | None,
         resume: dict[str, Any] | None,
         on_checkpoint: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    net, data = prepare(net, data, plan)
    device = data.device
    gen = torch.Generator(device=device).manual_seed(plan.seed)
    per_epoch = data.steps_per_epoch(plan.batch_size)
    total = per_epoch * plan.epochs if plan.max_steps is None else min(
        plan.max_steps, per_epoch * plan.epochs)
    step = (PipelinedStepper if plan.schedule == "pipelined" else Stepper)(net, plan, total)
    result = TrainResult(val_accuracy=0.0, device=str(device))
    done = 0 if resume is None else restore(resume, net, step, gen, result)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(done + 1, plan.epochs + 1):
        if result.steps >= total:
            break
        metrics = _train_epoch(net, data, plan, step, gen, epoch, result, total)
        result.history.append(metrics)
        result.train_seconds += metrics.seconds
        result.val_accuracy = metrics.val_accuracy
        if on_checkpoint is not None:
            on_checkpoint(snapshot(epoch, net, step, gen, result))
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    if device.type == "cuda":
        result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    return result


def _train_epoch(net: DecoupledNet, data: Data, plan: TrainPlan, step: Stepper,
                 gen: torch.Generator, epoch: int, result: TrainResult, total: int
                 ) -> EpochMetrics:
    device = data.device
    net.train()
    start = time.perf_counter()
    batches = ((nhwc(x), y) for x, y in data.train_batches(plan.batch_size, gen, plan.augment))
    sums, seen, n = step.run_epoch(batches, total - result.steps, epoch, result.steps)
    result.steps += n
    synchronize(device)
    seconds = time.perf_counter() - start
    check_finite(sums, epoch, result.steps)
    accs = evaluate(net, data.val, plan)
    return EpochMetrics(epoch, accs[-1], accs, (sums / max(1, n)).tolist(), seconds,
                        seen / seconds if seconds > 0 else 0.0)


@torch.no_grad()
def evaluate(net: DecoupledNet, split: Split, plan: TrainPlan) -> list[float]:
    """Accuracy of every block's head on ``split``; the last entry is the final output."""
    device = next(net.parameters()).device
    places = [next(b.parameters()).device for b in net.blocks]  # blocks may sit on devices
    net.eval()
    correct = torch.zeros(net.num_blocks, device=device)
    for x, y in eval_batches(split, plan.eval_batch_size):
        h = nhwc(x)
        for k, block in enumerate(net.blocks):
            h, yk = h.to(places[k]), y.to(places[k])
            with autocast(places[k], plan.precision):
                h = block(h)
                correct[k] += (net.head(k)(h).argmax(1) == yk).sum().to(device)
    return (correct / max(1, len(split))).tolist()
