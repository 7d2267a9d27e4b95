"""The distributed schedule: one process (rank) per contiguous group of blocks.

Rank 0 holds the data: it draws, augments and trains its blocks on batch t exactly as the
sequential schedule does, then sends the detached output and the labels to rank 1, which trains
its blocks on them and sends its own output on, and so on. Each block updates on batch t before
it sees batch t+1 and runs ``Stepper.train_block`` on the very inputs of the sequential
schedule, so the arithmetic is the same: on CPU with one thread per rank the weights match bit
for bit. Evaluation runs down the same chain; each rank counts its blocks' correct answers and
one all-reduce gives every rank the per-block accuracies. Loss sums are all-reduced per epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor

from bwbpf.spaces import DecoupledNet
from bwbpf.spaces.heads import check_schedule
from bwbpf.trainers.checkpoint import restore, snapshot
from bwbpf.trainers.data import Data, Split, eval_batches
from bwbpf.trainers.device import autocast, nhwc, nhwc_module, seeded_streams, synchronize
from bwbpf.trainers.group import Group
from bwbpf.trainers.plan import EpochMetrics, TrainPlan, TrainResult
from bwbpf.trainers.shards import Shards
from bwbpf.trainers.stepper import Stepper, check_finite
from bwbpf.trainers.transport import Inbox, Outbox


@dataclass(frozen=True)
class Sizes:
    """What every rank knows of the data without holding it (rank 0 shares it)."""

    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    train: int
    val: int
    test: int

    @classmethod
    def of(cls, data: Data) -> Sizes:
        return cls(data.num_classes, data.in_channels, data.image_size, len(data.train),
                   len(data.val), len(data.test))


class RankStepper(Stepper):
    """The Stepper of one rank: its blocks on its device, batches from the previous rank (or
    the data) in, its output to the next rank out."""

    def __init__(self, net: DecoupledNet, plan: TrainPlan, total_steps: int, group: Group,
                 sizes: Sizes) -> None:
        self.group, self.sizes = group, sizes
        check_schedule((a.family for a in net.decoupling.aux), "distributed")
        super().__init__(net, plan, total_steps)
        self.in_dims, dtype = self._signature()
        # The input images travel down the chain when a block's loss rebuilds them (infopro).
        self.images = net.needs_image()
        dims = (sizes.in_channels, *sizes.image_size) if self.images else ()
        self.inbox = None if group.first else Inbox(group.rank - 1, group.device, dtype, dims)
        self.outbox = None if group.last else Outbox(group.rank + 1)

    def _place_blocks(self) -> torch.device:
        dev = self.group.device
        for k in self.group.blocks:
            for m in (self.net.blocks[k], self.net.head(k)):
                nhwc_module(m.to(dev))
        return dev

    def _signature(self) -> tuple[tuple[int, ...], torch.dtype]:
        """This rank's input dtype, and, published for the next rank, its output's shape and
        dtype (bf16 under CUDA autocast), by one probe forward in eval mode (BatchNorm
        statistics untouched). Ranks probe in order: each needs its input's."""
        g, s = self.group, self.sizes
        shape, dtype = ([s.in_channels, *s.image_size], "float32") if g.first else (
            g.read("signature", g.rank - 1))
        h = torch.zeros(2, *shape, dtype=getattr(torch, dtype), device=g.device)
        with torch.no_grad(), autocast(g.device, self.plan.precision):
            for k in g.blocks:
                self.net.blocks[k].eval()
                h = self.net.blocks[k](h)
                self.net.blocks[k].train()
        g.publish("signature", [list(h.shape[1:]), str(h.dtype).removeprefix("torch.")])
        return tuple(shape), getattr(torch, dtype)

    def in_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.in_dims)

    def run_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], limit: int, epoch: int,
                  done: int) -> tuple[Tensor, int, int]:
        """Trains on ``limit`` batches (rank 0 draws them from ``batches``, the others receive
        them); returns every block's loss sum (all-reduced), images and steps."""
        g, blocks = self.group, self.group.blocks
        sums, n = torch.zeros(self.net.num_blocks, device=g.device), 0
        for x, y, image in self._source(batches, [self.in_shape(self._batch())] * limit):
            h = x
            for k in blocks:
                h, loss = self.train_block(k, h, y, g.device, image)
                sums[k] += loss
            if self.outbox is not None:
                self.outbox.send(h, y, image if self.images else None)
            n += 1
            if (done + n) % self.plan.check_every == 0:
                check_finite(sums[blocks.start:blocks.stop], epoch, done + n, blocks.start)
            if n >= limit:
                break
        if self.outbox is not None:
            self.outbox.flush()
        check_finite(sums[blocks.start:blocks.stop], epoch, done + n, blocks.start)
        return g.all_sum(sums), n * self._batch(), n

    def _batch(self) -> int:
        return min(self.plan.batch_size, self.sizes.train)

    def _source(self, batches: Iterable[tuple[Tensor, Tensor]], shapes: list[tuple[int, ...]]
                ) -> Iterable[tuple[Tensor, Tensor, Tensor | None]]:
        """(input, labels, the input images) of every training batch of this rank."""
        if self.inbox is None:
            return ((x, y, x) for x, y in batches)
        return self.inbox.stream(shapes, images=self.images)


def _epoch(step: RankStepper, data: Data | None, sizes: Sizes, plan: TrainPlan,
           gen: torch.Generator, epoch: int, steps: int, result: TrainResult) -> EpochMetrics:
    """One epoch of this rank's blocks (``steps`` batches), then every head's validation
    accuracy; counts the steps into ``result``."""
    step.net.train()
    start = time.perf_counter()
    batches = _batches(data, plan, gen) if data is not None else iter(())
    sums, seen, n = step.run_epoch(batches, steps, epoch, result.steps)
    synchronize(step.group.device)
    seconds = time.perf_counter() - start
    result.steps += n
    check_finite(sums, epoch, result.steps)
    accs = evaluate_ranked(step, data.val if data is not None else None, sizes.val)
    return EpochMetrics(epoch, accs[-1], accs, (sums / max(1, n)).tolist(), seconds,
                        seen / seconds if seconds > 0 else 0.0)


def fit_ranked(net: DecoupledNet, data: Data | None, sizes: Sizes, plan: TrainPlan, group: Group,
               shards: Shards, *, resume: bool,
               on_epoch: Callable[[int, EpochMetrics], None] | None = None,
               on_checkpoint: Callable[[dict[str, Any]], None] | None = None
               ) -> tuple[TrainResult, RankStepper]:
    """``fit`` for one rank of a distributed run (rank 0 passes the data, the others None):
    trains this rank's blocks and writes its checkpoint shard after every epoch; then, on
    every rank, ``on_checkpoint(this rank's snapshot)`` once the checkpoint is complete and
    ``on_epoch(epoch, metrics)``. Accuracies and losses are the same on every rank; the
    timing is each rank's own. The global random generators are seeded for the training and
    left as they were."""
    with seeded_streams(plan.seed, [group.device]):
        return _fit_ranked(net, data, sizes, plan, group, shards, resume, on_epoch,
                           on_checkpoint)


def _fit_ranked(net: DecoupledNet, data: Data | None, sizes: Sizes, plan: TrainPlan,
                group: Group, shards: Shards, resume: bool,
                on_epoch: Callable[[int, EpochMetrics], None] | None,
                on_checkpoint: Callable[[dict[str, Any]], None] | None
                ) -> tuple[TrainResult, RankStepper]:
    dev = group.device
    data = data.to(dev) if data is not None else None
    gen = torch.Generator(device=dev).manual_seed(plan.seed)
    per_epoch = max(1, sizes.train // min(plan.batch_size, sizes.train))
    total = per_epoch * plan.epochs if plan.max_steps is None else min(
        plan.max_steps, per_epoch * plan.epochs)
    step = RankStepper(net, plan, total, group, sizes)
    result = TrainResult(val_accuracy=0.0, device=str(dev))
    state = shards.load() if resume else None
    done = 0 if state is None else restore(state, net, step, gen, result, group.blocks)
    for epoch in range(done + 1, plan.epochs + 1):
        if result.steps >= total:
            break
        m = _epoch(step, data, sizes, plan, gen, epoch, min(per_epoch, total - result.steps),
                   result)
        result.history.append(m)
        result.train_seconds += m.seconds
        result.val_accuracy = m.val_accuracy
        snap = snapshot(epoch, net, step, gen, result, group.blocks)
        shards.save(snap)
        if on_checkpoint is not None:
            on_checkpoint(snap)
        if on_epoch is not None:
            on_epoch(epoch, m)
    return result, step


def _batches(data: Data, plan: TrainPlan, gen: torch.Generator
             ) -> Iterator[tuple[Tensor, Tensor]]:
    return ((nhwc(x), y) for x, y in data.train_batches(plan.batch_size, gen, plan.augment))


@torch.no_grad()
def evaluate_ranked(step: RankStepper, split: Split | None, size: int) -> list[float]:
    """Every block's head accuracy on ``split`` (held by rank 0; ``size`` images), on every
    rank: the batches run down the chain of ranks like training batches."""
    g, net, plan = step.group, step.net, step.plan
    net.eval()
    correct = torch.zeros(net.num_blocks, device=g.device)
    sizes = [min(plan.eval_batch_size, size - i) for i in range(0, size, plan.eval_batch_size)]
    source = ((nhwc(x), y, None) for x, y in eval_batches(split, plan.eval_batch_size)
              ) if split is not None else step.inbox.stream(  # type: ignore[union-attr]
                  [step.in_shape(b) for b in sizes])
    for x, y, _ in source:
        h = x
        for k in g.blocks:
            with autocast(g.device, plan.precision):
                h = net.blocks[k](h)
                correct[k] += (net.head(k)(h).argmax(1) == y).sum()
        if step.outbox is not None:
            step.outbox.send(h, y)
    if step.outbox is not None:
        step.outbox.flush()
    net.train()
    return (g.all_sum(correct) / max(1, size)).tolist()
