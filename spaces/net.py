"""A backbone cut into blocks, with one aux head per block but the last."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bwbpf.spaces.backbone_spec import UnitInfo
from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.copied_heads import MomentumHead
from bwbpf.spaces.decoupling import Decoupling
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.heads import AuxHead, HeadPlace, make_aux_head
from bwbpf.spaces.losses import final_head_loss


class DecoupledNet(nn.Module):
    """``blocks[k]`` is an ``nn.Sequential`` of units; ``aux_heads[k]`` trains block k < K-1;
    ``classifier`` sits after the last block and sees the global loss."""

    def __init__(
        self,
        decoupling: Decoupling,
        blocks: Sequence[nn.Module],
        aux_heads: Sequence[AuxHead],
        classifier: nn.Module,
        units: list[UnitInfo],
        input_shape: tuple[int, tuple[int, int]] = (3, (32, 32)),
    ) -> None:
        super().__init__()
        self.decoupling = decoupling
        self.units = units
        self.in_channels, self.image_size = input_shape
        self.blocks = nn.ModuleList(blocks)
        self.aux_heads = nn.ModuleList(aux_heads)
        self.classifier = classifier

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)

    def head_loss(self, k: int, h: Tensor, y: Tensor, label_smoothing: float = 0.0,
                  image: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Block k's loss and logits from its output ``h``: local for k < K-1, global last.
        ``image``, the net's input batch, is needed where ``needs_image(k)``."""
        if k < self.num_blocks - 1:
            head = self.aux_heads[k]
            assert isinstance(head, AuxHead)
            return head.loss(h, y, label_smoothing, image)
        return final_head_loss(self.classifier, h, y, label_smoothing)

    def needs_image(self, k: int | None = None) -> bool:
        """Whether block k's loss (any block's, without k) rebuilds the input image
        (``infopro``): the schedules then hand the batch's images to that block."""
        heads = [self.aux_heads[k]] if k is not None and k < len(self.aux_heads) else (
            [] if k is not None else list(self.aux_heads))
        return any(isinstance(h, AuxHead) and h.needs_image for h in heads)

    def head(self, k: int) -> nn.Module:
        return self.aux_heads[k] if k < self.num_blocks - 1 else self.classifier

    def block_parameters(self, k: int) -> list[nn.Parameter]:
        """Everything block k's optimiser updates: its units and its head (not a momentum
        head's copies, which follow the next units instead)."""
        return [p for p in (*self.blocks[k].parameters(), *self.head(k).parameters())
                if p.requires_grad]

    def unit(self, i: int) -> nn.Module:
        """Backbone unit ``i``, in the block that holds it."""
        for k, (a, b) in enumerate(self.decoupling.block_ranges()):
            if a <= i < b:
                block = self.blocks[k]
                assert isinstance(block, nn.Sequential)
                return block[i - a]
        raise IndexError(f"unit {i} is not in the net ({len(self.units)} units)")

    @property
    def has_momentum_heads(self) -> bool:
        return any(isinstance(h, AuxHead) and isinstance(h.logits, MomentumHead)
                   for h in self.aux_heads)

    def track_momentum(self, momentum: float) -> None:
        """Moves every momentum head's copies one step toward the units they copy: after every
        training step, when all blocks have stepped (``copied_heads.momentum_for`` the training's
        length; 0: onto them, as built)."""
        for h in self.aux_heads:
            if isinstance(h, AuxHead) and isinstance(h.logits, MomentumHead):
                h.logits.track([self.unit(i) for i in h.logits.units], momentum)

    def block_output_info(self, k: int) -> UnitInfo:
        return self.units[self.decoupling.block_ranges()[k][1] - 1]


def build(
    decoupling: Decoupling,
    num_classes: int,
    in_channels: int = 3,
    image_size: int | tuple[int, int] = 32,
    *,
    seed: int | None = None,
) -> DecoupledNet:
    """Builds the net; with ``seed`` the initial weights do not depend on the global RNG."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if num_classes < 2 or in_channels < 1 or min(size) < 1:
        raise ConfigError(
            f"input: need >= 2 classes, >= 1 channel and a positive size, got "
            f"{num_classes} classes, {in_channels} channels, {size[0]}x{size[1]}"
        )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return _build(decoupling, num_classes, in_channels, (size[0], size[1]))


def _build(d: Decoupling, num_classes: int, in_channels: int, size: tuple[int, int]
           ) -> DecoupledNet:
    spec = get_backbone(d.backbone)
    infos, units = spec.build_units(width=d.width, in_channels=in_channels, image_size=size)
    blocks = [nn.Sequential(*units[a:b]) for a, b in d.block_ranges()]
    heads = []
    for k, aux in enumerate(d.aux):
        out = infos[d.cuts[k] - 1]
        place = HeadPlace(d.backbone, d.width, out.index, k, d.num_blocks, in_channels, size)
        heads.append(make_aux_head(aux.family, channels=out.channels, size=out.size,
                                   num_classes=num_classes, width=aux.width, depth=aux.depth,
                                   loss=aux.loss, min_channels=aux.min_channels, place=place))
    classifier = spec.build_classifier(infos[-1], num_classes, d.width)
    net = DecoupledNet(d, blocks, heads, classifier, infos, (in_channels, size))
    net.track_momentum(0.0)  # a momentum head starts as a copy of the units it follows
    return net
