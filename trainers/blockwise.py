"""The BP-free block-wise trainer (and, with one block, the end-to-end BP baseline).

Block k receives the *detached* output of block k-1, computes its loss through its own head,
and steps its own optimiser right after its backward, so its graph is freed before block k+1
runs: no gradient crosses a block boundary and one block's activations are alive at a time.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import Tensor

from bwbpf.spaces import DecoupledNet
from bwbpf.trainers.checkpoint import restore, snapshot
from bwbpf.trainers.data import Data, Split, eval_batches
from bwbpf.trainers.device import autocast, resolve_device, synchronize
from bwbpf.trainers.optim import make_optimizer, make_schedule
from bwbpf.trainers.plan import EpochMetrics, NonFiniteLoss, TrainPlan, TrainResult

EpochCallback = Callable[[int, EpochMetrics], None]


class Stepper:
    """One training step of every block; holds the per-block optimisers and schedules."""

    def __init__(self, net: DecoupledNet, plan: TrainPlan, total_steps: int) -> None:
        self.net, self.plan = net, plan
        self.device = next(net.parameters()).device
        cfgs = net.decoupling.optim
        self.opts = [make_optimizer(net.block_parameters(k), cfgs[k]) for k in range(len(cfgs))]
        self.scheds = [make_schedule(o, total_steps, plan.warmup_fraction) for o in self.opts]

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Trains on one batch; returns the (K,) detached losses of the blocks."""
        return self._blockwise(x, y) if self.plan.detach else self._deep_supervision(x, y)

    def _blockwise(self, x: Tensor, y: Tensor) -> Tensor:
        losses, h = [], x
        for k, block in enumerate(self.net.blocks):
            with autocast(self.device, self.plan.precision):
                out = block(h.detach())  # the boundary: no gradient flows back into block k-1
                loss, _ = self.net.head_loss(k, out, y, self.plan.label_smoothing)
            self.opts[k].zero_grad(set_to_none=True)
            loss.backward()  # frees block k's graph before block k+1 runs
            self.opts[k].step()
            self.scheds[k].step()
            losses.append(loss.detach())
            h = out.detach()
        return torch.stack(losses)

    def _deep_supervision(self, x: Tensor, y: Tensor) -> Tensor:
        # The BWBPF public code's arithmetic: one graph, the sum of all losses, one backward.
        losses, h = [], x
        with autocast(self.device, self.plan.precision):
            for k, block in enumerate(self.net.blocks):
                h = block(h)
                losses.append(self.net.head_loss(k, h, y, self.plan.label_smoothing)[0])
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        for opt, sched in zip(self.opts, self.scheds):
            opt.step()
            sched.step()
        return torch.stack([loss.detach() for loss in losses])


def prepare(net: DecoupledNet, data: Data, plan: TrainPlan) -> tuple[DecoupledNet, Data]:
    """Puts net and data on the plan's device (channels_last on CUDA)."""
    device = resolve_device(plan.device)
    net = net.to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    return net, data.to(device)


def fit(net: DecoupledNet, data: Data, plan: TrainPlan, on_epoch: EpochCallback | None = None,
        *, resume: dict[str, Any] | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Trains ``net`` on ``data.train``; after every epoch evaluates every head on ``data.val``,
    hands ``on_checkpoint`` the full training state (see ``trainers.checkpoint``) and calls
    ``on_epoch(epoch, metrics)``, which may raise to stop (e.g. to prune). With ``resume`` (a
    state from ``on_checkpoint``) training continues where it stopped, with the same arithmetic
    as an uninterrupted run."""
    net, data = prepare(net, data, plan)
    device = data.device
    torch.manual_seed(plan.seed)
    gen = torch.Generator(device=device).manual_seed(plan.seed)
    per_epoch = data.steps_per_epoch(plan.batch_size)
    total = per_epoch * plan.epochs if plan.max_steps is None else min(
        plan.max_steps, per_epoch * plan.epochs)
    step = Stepper(net, plan, total)
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
    sums, seen, batches = torch.zeros(net.num_blocks, device=device), 0, 0
    start = time.perf_counter()
    for x, y in data.train_batches(plan.batch_size, gen, plan.augment):
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        sums += step(x, y)
        seen, batches = seen + len(y), batches + 1
        result.steps += 1
        if result.steps % plan.check_every == 0:
            _check_finite(sums, epoch, result.steps)
        if result.steps >= total:
            break
    synchronize(device)
    seconds = time.perf_counter() - start
    _check_finite(sums, epoch, result.steps)
    accs = evaluate(net, data.val, plan)
    return EpochMetrics(epoch, accs[-1], accs, (sums / max(1, batches)).tolist(), seconds,
                        seen / seconds if seconds > 0 else 0.0)


def _check_finite(sums: Tensor, epoch: int, steps: int) -> None:
    bad = (~torch.isfinite(sums)).nonzero().flatten().tolist()  # syncs the device
    if bad:
        raise NonFiniteLoss(f"block {bad[0] + 1} loss is not finite (epoch {epoch}, "
                            f"by step {steps})")


@torch.no_grad()
def evaluate(net: DecoupledNet, split: Split, plan: TrainPlan) -> list[float]:
    """Accuracy of every block's head on ``split``; the last entry is the final output."""
    device = next(net.parameters()).device
    net.eval()
    correct = torch.zeros(net.num_blocks, device=device)
    for x, y in eval_batches(split, plan.eval_batch_size):
        x, y = x.to(device), y.to(device)
        h = x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x
        with autocast(device, plan.precision):
            for k, block in enumerate(net.blocks):
                h = block(h)
                correct[k] += (net.head(k)(h).argmax(1) == y).sum()
    return (correct / max(1, len(split))).tolist()
