"""Measured step times: the cost model behind the speed-up over end-to-end BP.

FLOPs mispredict time: early, high-resolution units are memory-bound (BatchNorm, ReLU,
pooling), and small heads pay per-operation overhead that no FLOP count sees. So a
block-wise step is predicted from measured pieces, on the device and with the thread count
that trains the net, at the training batch size:

- every unit, forward+backward, with the input gradient for all but the first (as inside a
  block, and as inside BP);
- each aux head with its local loss (a decoder or copied units included), on the output of the
  unit it reads;
- the classifier with the global loss.

Block k's step is the sum of its units' and its head's; BP's is the sum of every unit's and the
classifier's. Each piece is timed once: the fastest of ``repeats`` calls after ``warmup``
(the least noisy estimate on a shared machine), with CUDA events on GPU, under the trainers'
autocast and memory format. Times go into ``cache`` (a study's storage, see search.trial.costs), so
a resumed study or a second worker reuses them and every trial of a study is judged on the
same figures.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, MutableMapping

import torch
from torch import Tensor, nn

from bwbpf.spaces import AuxSpec, Decoupling, HeadPlace, UnitInfo, get_backbone, make_aux_head
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.losses import final_head_loss
from bwbpf.trainers.cost import AgainstBP, Ratios, against_bp, block_sums
from bwbpf.trainers.device import autocast, nhwc, nhwc_module

REPEATS, WARMUP = 5, 2


@dataclass(frozen=True)
class StepTimes(AgainstBP):
    """Predicted seconds of one training step on a batch."""

    block_seconds: tuple[float, ...]  # block k's units and its head (the classifier last)
    backprop_seconds: float  # the same backbone end to end, with the classifier

    @property
    def ratios(self) -> Ratios:
        return against_bp(self.block_seconds, self.backprop_seconds)


def time_call(step: Callable[[], None], device: torch.device, *, repeats: int = REPEATS,
              warmup: int = WARMUP) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - t0)
    return best


class StepTimer:
    """Times the pieces of the nets of one input shape, on one device, at one batch size."""

    def __init__(self, device: torch.device, batch: int, *, in_channels: int,
                 image_size: tuple[int, int], num_classes: int,
                 cache: MutableMapping[str, float] | None = None, repeats: int = REPEATS,
                 warmup: int = WARMUP) -> None:
        self.device, self.batch = device, batch
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.cache: MutableMapping[str, float] = {} if cache is None else cache
        self.repeats, self.warmup = repeats, warmup

    @property
    def context(self) -> str:
        """What the times hold for: device (threads on CPU), batch, input and classes."""
        if self.device.type == "cuda":
            where = torch.cuda.get_device_name(self.device)
        else:
            where = f"cpu x{torch.get_num_threads()}"
        h, w = self.image_size
        return (f"{where}|batch {self.batch}|in {self.in_channels}x{h}x{w}|"
                f"{self.num_classes} classes")

    def time_again(self) -> None:
        """From now on each piece is timed once more and the faster of its two figures kept:
        a burst of load slows the pieces timed in it, rarely the same ones twice. Only while
        the times are this timer's own (a study's figures are written once, search.trial.costs)."""
        if type(self.cache) is dict:
            self.cache = _Faster(self.cache)

    def _key(self, *piece: object) -> str:
        return "|".join([self.context, *map(str, piece)])

    def _time(self, module: nn.Module, x: Tensor, loss: Callable[[Tensor], Tensor]) -> float:
        nhwc_module(module.to(self.device).train())
        x = nhwc(x)

        def step() -> None:
            with autocast(self.device, "auto"):
                out = loss(module(x))
            out.backward()

        return time_call(step, self.device, repeats=self.repeats, warmup=self.warmup)

    def units(self, backbone: str, width: float) -> list[float]:
        """Seconds of every unit's forward+backward."""
        spec = get_backbone(backbone)
        keys = [self._key("unit", backbone, f"x{width:g}", k) for k in range(spec.num_units)]
        if any(k not in self.cache for k in keys):
            _, units = spec.build_units(width=width, in_channels=self.in_channels,
                                        image_size=self.image_size)
            h = torch.randn(self.batch, self.in_channels, *self.image_size, device=self.device)
            for k, (key, unit) in enumerate(zip(keys, units)):
                x = h.detach().requires_grad_(k > 0)
                if key not in self.cache:
                    self.cache[key] = self._time(unit, x, lambda out: out.float().mean())
                with torch.no_grad(), autocast(self.device, "auto"):
                    h = unit.to(self.device).train()(x).float()
        return [self.cache[k] for k in keys]

    def head(self, aux: AuxSpec, on: UnitInfo, place: HeadPlace) -> float:
        """Seconds of an aux head's forward+backward with its local loss, on ``on``'s output,
        at ``place`` (which decides what a ``downstream`` head copies)."""
        piece: list[object] = ["head", aux.family, f"d{aux.depth}", f"x{aux.width:g}", aux.loss,
                               f"{on.channels}x{on.size[0]}x{on.size[1]}"]
        if aux.min_channels:
            piece.append(f"min{aux.min_channels}")
        if AUX_HEADS.get(aux.family).needs_place:
            piece.append(f"{place.backbone} x{place.width:g} after {place.unit}")
        key = self._key(*piece)
        if key not in self.cache:
            head = make_aux_head(aux.family, channels=on.channels, size=on.size,
                                 num_classes=self.num_classes, width=aux.width, depth=aux.depth,
                                 loss=aux.loss, min_channels=aux.min_channels, place=place)
            y = self._labels()
            image = torch.randn(self.batch, self.in_channels, *self.image_size,
                                device=self.device)
            self.cache[key] = self._time(
                _Through(lambda h: head.loss(h, y, image=image)[0], head), self._input(on),
                lambda out: out)
        return self.cache[key]

    def classifier(self, backbone: str, width: float) -> float:
        """Seconds of the classifier's forward+backward with the global loss."""
        key = self._key("classifier", backbone, f"x{width:g}")
        if key not in self.cache:
            spec = get_backbone(backbone)
            last = spec.describe(width=width, in_channels=self.in_channels,
                                 image_size=self.image_size)[-1]
            cls = spec.build_classifier(last, self.num_classes, width)
            y = self._labels()
            self.cache[key] = self._time(_Through(lambda h: final_head_loss(cls, h, y)[0], cls),
                                         self._input(last), lambda out: out)
        return self.cache[key]

    def predict(self, d: Decoupling) -> StepTimes:
        """Block k's step and BP's, from the pieces (timed now when not in the cache)."""
        units = self.units(d.backbone, d.width)
        infos = get_backbone(d.backbone).describe(width=d.width, in_channels=self.in_channels,
                                                   image_size=self.image_size)
        last = self.classifier(d.backbone, d.width)
        heads = [self.head(aux, infos[c - 1], self.place(d, k, infos[c - 1].index))
                 for k, (aux, c) in enumerate(zip(d.aux, d.cuts))] + [last]
        return StepTimes(tuple(block_sums(units, d.cuts, heads)), sum(units) + last)

    def place(self, d: Decoupling, block: int, unit: int) -> HeadPlace:
        return HeadPlace(d.backbone, d.width, unit, block, d.num_blocks, self.in_channels,
                         self.image_size)

    def _labels(self) -> Tensor:
        return torch.arange(self.batch, device=self.device) % self.num_classes

    def _input(self, on: UnitInfo) -> Tensor:
        # A block's output: its head back-propagates into it.
        return torch.randn(self.batch, on.channels, *on.size, device=self.device,
                           requires_grad=True)


class _Faster(dict[str, float]):
    """A second timing pass: every piece is missing again; a new figure keeps the faster."""

    def __init__(self, first: dict[str, float]) -> None:
        super().__init__()
        self.first = dict(first)

    def __setitem__(self, key: str, value: float) -> None:
        super().__setitem__(key, min(value, self.first.get(key, value)))


class _Through(nn.Module):
    """A head and its loss as one module (for timing): ``forward`` returns the loss."""

    def __init__(self, loss: Callable[[Tensor], Tensor], head: nn.Module) -> None:
        super().__init__()
        self.fn, self.head = loss, head

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)
