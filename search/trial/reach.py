"""What a space's decouplings cost before any is built: the pieces of one backbone (every unit,
each head at each place it can sit, the classifier) probed or timed once each, and the
programme over them that the constraints use.

- ``Pieces.costs`` gives any decoupling's figures against BP from its pieces: the step costs
  add up (``trainers.cost.block_sums``), the saved bytes follow ``trainers.cost.chain_saved``,
  and the ratios come from ``trainers.cost.against_bp``, as measure_cost's and the timer's do;
  the test suite checks the two agree for every cut set of vgg8b and ResNet-18;
- ``profile`` tabulates every block [a, c) with the space's cheapest head, and
  ``least_largest`` searches all cut sets over it by dynamic programming: the best speed-up
  and the least memory the space can reach (``constraints.check_reachable``);
- ``cut_sets`` lists every cut set of K blocks, over which ``search.trial.placement`` finds the
  feasible ones for heads already drawn (samples feasible by construction).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator, NamedTuple, Sequence

from bwbpf.spaces import AuxSpec, Decoupling, HeadPlace, SearchSpace, get_backbone
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.losses import LocalLoss
from bwbpf.trainers.cost import (
    Ratios,
    Saved,
    against_bp,
    block_sums,
    chain_saved,
    classifier_cost,
    head_cost,
    unit_probes,
)
from bwbpf.trainers.timing import StepTimer

Piece = tuple[float, Saved]  # (step cost: FLOPs per image or measured seconds, saved bytes)


class Pieces:
    """One backbone at one width and input size: its units' and classifier's costs, and each
    head's at each unit it can read, probed once each (FLOPs), or with measured step times
    from ``timer`` (the study's, so every trial is judged on the same figures)."""

    def __init__(self, backbone: str, width: float, *, in_channels: int,
                 image_size: tuple[int, int], num_classes: int,
                 timer: StepTimer | None = None) -> None:
        self.backbone, self.width, self.timer = backbone, width, timer
        self.in_channels, self.image_size, self.num_classes = (in_channels, image_size,
                                                               num_classes)
        self.infos = get_backbone(backbone).describe(width=width, in_channels=in_channels,
                                                     image_size=image_size)
        probes = unit_probes(backbone, width=width, in_channels=in_channels,
                             image_size=image_size)
        self.saved = [s for _, s in probes]
        self.step = ([float(f) for f, _ in probes] if timer is None
                     else timer.units(backbone, width))
        flops, cls = classifier_cost(backbone, width=width, last=self.infos[-1],
                                     num_classes=num_classes)
        self.classifier: Piece = (float(flops) if timer is None
                                  else timer.classifier(backbone, width), cls)
        self._heads: dict[tuple[object, ...], Piece] = {}

    @property
    def units(self) -> int:
        return len(self.step)

    def head(self, aux: AuxSpec, unit: int, block: int = 0, num_blocks: int = 2) -> Piece:
        """The head ``aux`` with its local loss on unit ``unit``'s output."""
        info = self.infos[unit]
        # Heads that copy later units differ with the unit they sit after.
        key = (aux, info.channels, info.size, unit if AUX_HEADS.get(aux.family).needs_place
               else -1)
        if key not in self._heads:
            place = HeadPlace(self.backbone, self.width, unit, block, num_blocks,
                              self.in_channels, self.image_size)
            f, saved = head_cost(aux.family, depth=aux.depth, loss=aux.loss, on=info,
                                 width=aux.width, num_classes=self.num_classes,
                                 min_channels=aux.min_channels, place=place)
            self._heads[key] = (float(f) if self.timer is None
                                else self.timer.head(aux, info, place), saved)
        return self._heads[key]

    def block(self, a: int, c: int, head: Piece) -> tuple[float, int]:
        """(step cost, saved bytes) of the block of units [a, c) ending in ``head``."""
        step = block_sums(self.step[a:c], (), (head[0],))[0]
        return step, chain_saved([*self.saved[a:c], head[1]], first=a == 0)

    def backprop(self) -> tuple[float, int]:
        return self.block(0, self.units, self.classifier)

    def costs(self, cuts: Sequence[int], aux: Sequence[AuxSpec]) -> Ratios:
        """Speed-up, overhead and memory ratio of the decoupling with these cuts and heads."""
        bounds = (0, *cuts, self.units)
        k = len(bounds) - 1
        heads = [self.head(a, c - 1, i, k) for i, (a, c) in enumerate(zip(aux, cuts))]
        blocks = [self.block(a, c, h)
                  for (a, c), h in zip(zip(bounds, bounds[1:]), [*heads, self.classifier])]
        bp = self.backprop()
        return against_bp([s for s, _ in blocks], bp[0], [m for _, m in blocks], bp[1])

    def of(self, d: Decoupling) -> Ratios:
        return self.costs(d.cuts, d.aux)


class Profile(NamedTuple):
    """One backbone's costs, for every block a cut set can make: ``step[a][c]`` (measured
    seconds, or FLOPs per image) and ``saved[a][c]`` (bytes per image) of the block of units
    [a, c) with the space's cheapest head on it (the classifier and the global loss when c is
    the last unit)."""

    backbone: str
    step: list[list[float]]
    saved: list[list[int]]

    @property
    def units(self) -> int:
        return len(self.step) - 1

    def block(self, a: int, c: int, m: int) -> float:
        """Figure m (0 step cost, 1 saved bytes) of the block of units [a, c)."""
        return (self.step, self.saved)[m][a][c]

    def backprop(self, m: int) -> float:
        """End-to-end BP: one block of every unit, with the classifier."""
        return self.block(0, self.units, m)


def cheapest_heads(space: SearchSpace) -> list[AuxSpec]:
    """The cheapest head a sample can draw of each family: its least depth, the space's least
    width, and plain cross entropy when allowed (pred is part of every other loss; without
    it, each of the others)."""
    losses: list[LocalLoss] = ["pred"] if "pred" in space.losses else list(space.losses)
    out = []
    for family, loss in itertools.product(space.heads, losses):
        fam = AUX_HEADS.get(family)
        out.append(AuxSpec(family, fam.depths[0],
                           min(space.head_widths) if fam.has_width else 1.0, loss,
                           space.head_min_channels if fam.has_width else 0))
    return out


def profile(pieces: Pieces, space: SearchSpace) -> Profile:
    """Every block [a, c) of ``pieces``' backbone with the cheapest head at c: the least step
    cost and, separately, the least saved bytes over the space's head families."""
    n, options = pieces.units, cheapest_heads(space)
    step = [[0.0] * (n + 1) for _ in range(n + 1)]
    saved = [[0] * (n + 1) for _ in range(n + 1)]
    for a in range(n):
        for c in range(a + 1, n + 1):
            heads = [pieces.classifier] if c == n else [pieces.head(h, c - 1) for h in options]
            costs = [pieces.block(a, c, h) for h in heads]
            step[a][c] = min(s for s, _ in costs)
            saved[a][c] = min(m for _, m in costs)
    return Profile(pieces.backbone, step, saved)


def least_largest(p: Profile, space: SearchSpace, m: int,
                  allowed: Callable[[int, int], bool] = lambda a, c: True) -> float:
    """The least, over the space's cut sets (K in its range, >= min_units units a block, only
    ``allowed`` blocks), of the largest block's figure m; inf when no cut set qualifies.
    Dynamic programming over (blocks, units covered): every cut set, without listing them."""
    n, u = p.units, space.min_units
    best = [[math.inf] * (n + 1) for _ in range(space.max_blocks + 1)]
    best[0][0] = 0.0
    for k in range(1, space.max_blocks + 1):
        for c in range(k * u, n + 1):
            for a in range((k - 1) * u, c - u + 1):
                if best[k - 1][a] < math.inf and allowed(a, c):
                    best[k][c] = min(best[k][c], max(best[k - 1][a], p.block(a, c, m)))
    return min(best[k][n] for k in range(space.min_blocks, space.max_blocks + 1))


def best_speedup(p: Profile, space: SearchSpace) -> float:
    return against_bp([least_largest(p, space, 0)], p.backprop(0)).speedup


def least_memory(p: Profile, space: SearchSpace, min_speedup: float | None = None) -> float:
    """The least memory ratio, among decouplings at >= ``min_speedup`` when given."""
    cap = math.inf if min_speedup is None else p.backprop(0) / min_speedup
    least = least_largest(p, space, 1, lambda a, c: p.block(a, c, 0) <= cap)
    return against_bp([1.0], 1.0, [least], p.backprop(1)).memory_ratio


def cut_sets(units: int, k: int, min_units: int) -> Iterator[tuple[int, ...]]:
    """Every cut set of ``k`` blocks of at least ``min_units`` units each, in order."""
    for cuts in itertools.combinations(range(1, units), k - 1):
        bounds = (0, *cuts, units)
        if all(b - a >= min_units for a, b in zip(bounds, bounds[1:])):
            yield cuts
