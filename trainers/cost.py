"""Cost accounting against end-to-end BP: FLOPs, parameters, speed-up and saved activations.

Counts are made once per configuration on a CPU copy of the net with a tiny batch and reported
per image: forward+backward FLOPs with ``torch.utils.flop_counter`` and the bytes autograd saves
for backward with ``saved_tensors_hooks`` (parameters and shared storages counted once).
"""

from __future__ import annotations

import abc
import copy
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from bwbpf.spaces import (
    DecoupledNet,
    HeadPlace,
    UnitInfo,
    balanced_cuts,
    get_backbone,
    make_aux_head,
)
from bwbpf.spaces.losses import LocalLoss, final_head_loss

PROBE_BATCH = 2  # images per probe; BatchNorm in train mode needs more than one value


class Ratios(NamedTuple):
    """A block-wise step against end-to-end BP's on the same backbone (``against_bp``)."""

    speedup: float  # BP's step / the slowest block's: what one device per block gains
    compute_overhead: float  # all blocks' steps / BP's: the extra work of local learning
    # sum / max of the blocks' steps: how much shorter a block-wise step gets when its blocks
    # run concurrently instead of one after another. Not a speed-up over BP (heavy heads
    # inflate both sums alike).
    block_parallelism: float
    memory_ratio: float  # the largest block's saved bytes / BP's (nan when not given)


def against_bp(blocks: Sequence[float], backprop: float, saved: Sequence[float] = (),
               backprop_saved: float = 0) -> Ratios:
    """The one place where per-block costs (FLOPs or seconds, each block's units and its head;
    the classifier in the last) and saved bytes become the figures against BP: NetCost, the
    timer's StepTimes, the constraints' reachability programme and the benchmarks read them
    here. Only one block's activations are alive at a time, so memory is the largest block's."""
    top = max(blocks)
    memory = max(saved) / backprop_saved if saved and backprop_saved else math.nan
    return Ratios(backprop / top, sum(blocks) / backprop, sum(blocks) / top, memory)


def block_sums(pieces: Sequence[float], cuts: Sequence[int], heads: Sequence[float] = ()
               ) -> list[float]:
    """Per block, the sum of its units' costs (``pieces``, one per unit) and its head's
    (``heads``, one per block when given): a block's step is its pieces run one after another."""
    bounds = (0, *cuts, len(pieces))
    sums = [sum(pieces[a:b]) for a, b in zip(bounds, bounds[1:])]
    return [s + h for s, h in zip(sums, heads)] if heads else sums


class AgainstBP(abc.ABC):
    """The figures against BP of anything with per-block costs (``ratios``)."""

    @property
    @abc.abstractmethod
    def ratios(self) -> Ratios:
        """Its per-block costs through ``against_bp``."""

    @property
    def speedup(self) -> float:
        return self.ratios.speedup

    @property
    def compute_overhead(self) -> float:
        return self.ratios.compute_overhead

    @property
    def block_parallelism(self) -> float:
        return self.ratios.block_parallelism


@dataclass(frozen=True)
class NetCost(AgainstBP):
    block_flops: list[int]  # per image, forward+backward of block k's units and its head
    block_params: list[int]
    block_saved_bytes: list[int]  # per image, saved for backward while block k trains
    backprop_flops: int  # per image, the same backbone trained end to end (no aux heads)
    backprop_saved_bytes: int  # per image, every unit's activations alive at once

    @property
    def ratios(self) -> Ratios:
        return against_bp(self.block_flops, self.backprop_flops, self.block_saved_bytes,
                          self.backprop_saved_bytes)

    @property
    def peak_saved_bytes(self) -> int:
        """Per image, BP-free: only one block's activations are alive at a time."""
        return max(self.block_saved_bytes)

    @property
    def memory_ratio(self) -> float:
        return self.ratios.memory_ratio


class Saved(NamedTuple):
    """Per image, what one piece of a net (a unit, a head) saves for backward, split by storage:
    its input's (0 when not saved), its output's (0 when not saved), everything else, and of
    that the network's input image's (a head whose loss rebuilds it saves it). Pieces that run
    back to back share the storage between them, which a block counts once:
    ``max(a.output, b.input)``, not the sum; so does the image, in the first block (it is the
    first unit's input)."""

    input: int
    inner: int
    output: int
    image: int = 0  # included in ``inner``


def chain_saved(pieces: Sequence[Saved], *, first: bool) -> int:
    """Per image, what a block made of ``pieces`` run back to back (its units, then its head or
    the classifier) saves for backward, as measure_cost counts it: the storage between two
    pieces once, and in the ``first`` block the image once (it is the first unit's input, and
    a head whose loss rebuilds the image saves it too). The one home of the sharing rule."""
    total = pieces[0].input + sum(p.inner for p in pieces) + pieces[-1].output
    total += sum(max(p.output, q.input) for p, q in zip(pieces, pieces[1:]))
    if first:
        total -= min(pieces[0].input, sum(p.image for p in pieces[1:]))
    return total


class _SavedBytes:
    """Sums the distinct storages autograd saves for backward, excluding parameters."""

    def __init__(self, skip: set[int]) -> None:
        self.skip, self.total = skip, 0
        self.seen: dict[int, int] = {}  # storage address -> bytes

    def pack(self, t: Tensor) -> Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in self.skip and ptr not in self.seen:
            self.seen[ptr] = st.nbytes()
            self.total += st.nbytes()
        return t

    def split(self, x: Tensor, out: Tensor | None = None, image: Tensor | None = None) -> Saved:
        """The total split into the input's storage, the output's and the rest (of which the
        image's), per image."""
        ptr = x.untyped_storage().data_ptr()
        inp = self.seen.get(ptr, 0)
        out_ptr = ptr if out is None else out.untyped_storage().data_ptr()
        outp = 0 if out_ptr == ptr else self.seen.get(out_ptr, 0)
        img = 0 if image is None else self.seen.get(image.untyped_storage().data_ptr(), 0)
        return Saved(inp // PROBE_BATCH, (self.total - inp - outp) // PROBE_BATCH,
                     outp // PROBE_BATCH, img // PROBE_BATCH)

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def measure_cost(net: DecoupledNet, in_channels: int, image_size: tuple[int, int]) -> NetCost:
    """Probes a CPU copy of ``net`` (the original is untouched)."""
    probe = copy.deepcopy(net).to("cpu", torch.float32).train()
    x = torch.randn(PROBE_BATCH, in_channels, *image_size)
    y = torch.arange(PROBE_BATCH) % 2
    params = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    flops, saved, sizes = [], [], []
    h = x
    for k, block in enumerate(probe.blocks):
        counter, mem = FlopCounterMode(display=False), _SavedBytes(params)
        with ExitStack() as stack:
            stack.enter_context(counter)
            stack.enter_context(mem.hooks())
            out = block(h.detach().requires_grad_(k > 0))
            probe.head_loss(k, out, y, image=x)[0].backward()
        flops.append(counter.get_total_flops() // PROBE_BATCH)
        saved.append(mem.total // PROBE_BATCH)
        # every weight the block holds, a momentum head's followed copies too
        sizes.append(sum(p.numel() for m in (probe.blocks[k], probe.head(k))
                         for p in m.parameters()))
        h = out.detach()
    bp_flops, bp_saved = _backprop_probe(probe, x, y, params)
    return NetCost(flops, sizes, saved, bp_flops // PROBE_BATCH, bp_saved // PROBE_BATCH)


def block_groups(block_flops: list[int], n: int) -> list[range]:
    """``n`` contiguous groups of blocks (one per device or rank) balanced by the blocks'
    training FLOPs (``NetCost.block_flops``). FLOPs, not times: every process computes the
    same groups on its own."""
    cuts = (0, *balanced_cuts([float(f) for f in block_flops], n), len(block_flops))
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


def _backprop_probe(net: DecoupledNet, x: Tensor, y: Tensor, params: set[int]) -> tuple[int, int]:
    counter, mem = FlopCounterMode(display=False), _SavedBytes(params)
    with counter, mem.hooks():
        h = x
        for block in net.blocks:
            h = block(h)
        torch.nn.functional.cross_entropy(net.classifier(h), y).backward()
    return counter.get_total_flops(), mem.total


def unit_costs(backbone: str, *, width: float, in_channels: int, image_size: tuple[int, int]
               ) -> tuple[list[int], list[int]]:
    """Per image (forward+backward FLOPs, saved bytes) of every unit of a backbone, no heads;
    feed either list to ``spaces.balanced_cuts`` for compute- or memory-balanced cuts."""
    probes = unit_probes(backbone, width=width, in_channels=in_channels, image_size=image_size)
    return [f for f, _ in probes], [sum(s) for _, s in probes]


def unit_probes(backbone: str, *, width: float, in_channels: int, image_size: tuple[int, int]
                ) -> list[tuple[int, Saved]]:
    """Per image (forward+backward FLOPs, saved bytes by storage) of every unit, each probed on
    its own as measure_cost runs it inside a block (input gradient for all but unit 0)."""
    spec = get_backbone(backbone)
    infos, units = spec.build_units(width=width, in_channels=in_channels, image_size=image_size)
    h = torch.randn(PROBE_BATCH, in_channels, *image_size)
    probes = []
    for k, unit in enumerate(units):
        params = {p.untyped_storage().data_ptr() for p in unit.parameters()}
        counter, mem = FlopCounterMode(display=False), _SavedBytes(params)
        x = h.detach().requires_grad_(k > 0)
        with counter, mem.hooks():
            out = unit.train()(x)
            out.sum().backward()
        probes.append((counter.get_total_flops() // PROBE_BATCH, mem.split(x, out)))
        h = out.detach()
    return probes


def head_cost(family: str, *, depth: int, width: float, loss: LocalLoss, on: UnitInfo,
              num_classes: int, min_channels: int = 0, place: HeadPlace | None = None
              ) -> tuple[int, Saved]:
    """Per image (forward+backward FLOPs, saved bytes by storage) of an aux head and its local
    loss on the output of unit ``on``, as measure_cost counts them inside a block (the
    ``infopro`` decoder and a ``downstream`` head's copies included; both need ``place``)."""
    head = make_aux_head(family, channels=on.channels, size=on.size, num_classes=num_classes,
                         width=width, depth=depth, loss=loss, min_channels=min_channels,
                         place=place)
    image = None if place is None else torch.randn(PROBE_BATCH, place.in_channels,
                                                   *place.image_size)
    return _probe_head(head, lambda x, y: head.loss(x, y, image=image)[0], on, image)


def classifier_cost(backbone: str, *, width: float, last: UnitInfo, num_classes: int
                    ) -> tuple[int, Saved]:
    """The same for the backbone's classifier and the global loss: what the last block pays
    instead of an aux head."""
    classifier = get_backbone(backbone).build_classifier(last, num_classes, width)
    return _probe_head(classifier, lambda x, y: final_head_loss(classifier, x, y)[0], last)


def _probe_head(module: torch.nn.Module, loss: Callable[[Tensor, Tensor], Tensor],
                on: UnitInfo, image: Tensor | None = None) -> tuple[int, Saved]:
    # The input needs its gradient, as a block's output does inside measure_cost.
    x = torch.randn(PROBE_BATCH, on.channels, *on.size, requires_grad=True)
    y = torch.arange(PROBE_BATCH) % 2
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    module.train()
    counter, mem = FlopCounterMode(display=False), _SavedBytes(params)
    with counter, mem.hooks():
        loss(x, y).backward()
    return counter.get_total_flops() // PROBE_BATCH, mem.split(x, image=image)


def unit_times(backbone: str, *, width: float, in_channels: int, image_size: tuple[int, int],
               batch: int = 64, repeats: int = 3) -> list[float]:
    """Measured seconds of every unit's forward+backward on a batch (CPU, this process's
    threads; the fastest of ``repeats``). Early, high-resolution units cost more time per FLOP
    (memory-bound BatchNorm, ReLU, pooling), so cuts balanced by time beat cuts balanced by
    FLOPs when blocks really run in parallel."""
    spec = get_backbone(backbone)
    _, units = spec.build_units(width=width, in_channels=in_channels, image_size=image_size)
    h = torch.randn(batch, in_channels, *image_size)
    out_times = []
    for k, unit in enumerate(units):
        unit.train()
        x = h.detach().requires_grad_(k > 0)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = unit(x)
            out.sum().backward()
            best = min(best, time.perf_counter() - start)
        out_times.append(best)
        h = out.detach()
    return out_times
