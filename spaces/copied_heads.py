"""Aux heads that copy the backbone's own later units: ``downstream`` (AugLocal: fresh copies,
learned) and ``momentum`` (MAN: copies whose weights follow the units they copy), with the rules
that say which units they copy and AugLocal's pyramidal depth. Both build from ``HeadArgs``
with its ``HeadPlace`` (spaces.heads), which registers them as families."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from bwbpf.spaces.backbone_spec import BackboneSpec, UnitInfo
from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.errors import ConfigError

if TYPE_CHECKING:  # heads.py registers these builders: its types, not a runtime import
    from bwbpf.spaces.heads import HeadArgs, HeadPlace


def downstream_units(unit: int, num_units: int, depth: int) -> list[int]:
    """The units a ``downstream`` head after ``unit`` copies: ``depth`` of the units after it
    (at most all of them), sampled evenly and ending at the last (AugLocal's rule)."""
    m = num_units - 1 - unit
    d = min(depth, m)
    return [unit + math.floor(i * m / d + 0.5) for i in range(1, d + 1)]


def _placed(a: HeadArgs, family: str) -> tuple[HeadPlace, BackboneSpec, list[UnitInfo]]:
    """A head that copies the net's own units: its place, the backbone and the net's units."""
    if a.place is None:
        raise ConfigError(f"family: a {family} head needs its place in the net (HeadPlace)")
    p = a.place
    spec = get_backbone(p.backbone)
    return p, spec, spec.describe(width=p.width, in_channels=p.in_channels,
                                  image_size=p.image_size)


def downstream_head(a: HeadArgs) -> nn.Module:
    # AugLocal: fresh copies of later units of the backbone, then pool + FC. Each copy has the
    # copied unit's kind, output channels (times the head's width) and output size.
    p, spec, infos = _placed(a, "downstream")
    layers, c, size = [], a.channels, a.size
    for i in downstream_units(p.unit, len(infos), a.depth):
        copy, c = spec.copy_unit(infos[i], c, size, a.width, a.min_channels)
        layers.append(copy)
        size = infos[i].size
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, a.classes))


# A momentum head's copies lag the units they follow by about this share of the training's
# steps (at least MIN_LAG steps): w <- m w + (1 - m) w_unit with m = 1 - 1 / lag. A fixed
# decay would suit one length only: 0.995 (a 200-step lag) leaves a 3-epoch run on 10,000
# images (240 steps) with copies still 30% their initial weights.
LAG_SHARE, MIN_LAG = 0.02, 10


def momentum_for(total_steps: int) -> float:
    """The moving average's decay for a training of ``total_steps`` steps."""
    return 1.0 - 1.0 / max(MIN_LAG, LAG_SHARE * total_steps)


class MomentumHead(nn.Module):
    """MAN's momentum auxiliary network (Su et al. 2024, arXiv 2407.05623): copies of the
    ``depth`` units right after the block, at the net's own shapes, whose weights are not
    learned but follow those units by an exponential moving average (``track``), each followed
    by a learnable per-channel bias (MAN's answer to the gap between the features the copied
    units were trained on and the ones they see here), then pool + FC, learned.

    So a block's local loss looks through (a slow copy of) what the next block does with its
    output. ``units`` names the backbone units copied; the owner of the net calls ``track``
    after every step (``DecoupledNet.track_momentum``)."""

    def __init__(self, copies: list[nn.Module], channels: list[int], units: list[int],
                 classes: int) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copies)
        for p in self.copies.parameters():
            p.requires_grad_(False)
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in channels])
        self.units = tuple(units)
        self.out = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(channels[-1], classes))

    def forward(self, x: Tensor) -> Tensor:
        for copy, bias in zip(self.copies, self.biases):
            x = copy(x) + bias
        return self.out(x)

    @torch.no_grad()
    def track(self, sources: list[nn.Module], momentum: float) -> None:
        """One moving-average step of every copy toward its unit's current weights."""
        for copy, unit in zip(self.copies, sources):
            for mine, theirs in zip(copy.parameters(), unit.parameters(), strict=True):
                mine.lerp_(theirs.to(mine.device), 1.0 - momentum)


def momentum_units(unit: int, num_units: int, depth: int) -> list[int]:
    """The units a ``momentum`` head after ``unit`` copies: the next ``depth`` (at most all)."""
    return list(range(unit + 1, min(num_units, unit + 1 + depth)))


def momentum_head(a: HeadArgs) -> nn.Module:
    p, spec, infos = _placed(a, "momentum")
    units = momentum_units(p.unit, len(infos), a.depth)
    if not units:
        raise ConfigError(f"family: a momentum head copies the units after unit {p.unit}, and "
                          "it is the net's last")
    copies = spec.build_some_units(units, width=p.width, in_channels=p.in_channels,
                                   image_size=p.image_size)
    return MomentumHead(copies, [infos[i].channels for i in units], units, a.classes)


def pyramidal_depth(depth: int, block: int, num_blocks: int, coefficient: float) -> int:
    """AugLocal's pyramidal depth: ``depth`` at the first block, falling linearly to
    ``depth * (1 - coefficient)`` at the last aux block (never below 1)."""
    span = max(1, num_blocks - 2)
    return max(1, math.floor(depth * (1 - coefficient * block / span) + 0.5))
