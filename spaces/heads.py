"""Auxiliary heads ("aux heads"): the families, and ``AuxHead``, which puts a family's logits
together with its local loss's pieces (``bwbpf.spaces.losses``).

Every family builds from the (channels, spatial size) of the unit it sits on, the number of
classes, and its knobs: ``width`` multiplies the head's own channels relative to its input
channels (never below ``min_channels``, so heads on narrow stages are not starved); ``depth``
is the number of layers of the family's repeated part. ``downstream`` heads also need their
``HeadPlace``: they copy the backbone's own later units (AugLocal), as do ``momentum`` heads,
whose copies follow those units' weights (MAN); both are built in ``spaces.copied_heads``. So
does the ``infopro`` loss, whose weights follow the block's position and whose decoder rebuilds
the input image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch.nn.functional as F
from torch import Tensor, nn

from bwbpf.spaces.backbone_spec import scaled
from bwbpf.spaces.copied_heads import downstream_head, momentum_head
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.losses import (
    PREDSIM_BETA,
    Decoder,
    LocalLoss,
    SimProjection,
    infopro_weights,
    pooled_size,
    similarity,
)
from bwbpf.spaces.registry import Registry


@dataclass(frozen=True)
class HeadPlace:
    """Where a head sits in its net: the backbone (at the net's width, on its input) and the
    unit whose output it reads, and the block it trains out of how many."""

    backbone: str
    width: float
    unit: int
    block: int = 0
    num_blocks: int = 2
    in_channels: int = 3
    image_size: tuple[int, int] = (32, 32)


@dataclass(frozen=True)
class HeadArgs:
    """What a family builds from: its input, the classes, its knobs and its place."""

    channels: int
    size: tuple[int, int]
    classes: int
    width: float
    depth: int
    min_channels: int = 0
    place: HeadPlace | None = None

    def hidden(self, c: int, factor: float = 1.0) -> int:
        """The head's own channels for ``c`` input channels: ``c * width * factor``, at least
        ``min_channels``."""
        return max(self.min_channels, scaled(c, self.width * factor))


HeadBuilder = Callable[[HeadArgs], nn.Module]


@dataclass(frozen=True)
class HeadFamily:
    name: str
    build: HeadBuilder  # HeadArgs -> logits module
    depths: tuple[int, int]  # inclusive range of the depth knob
    has_width: bool
    summary: str
    searched_depths: int = 0  # the largest depth a search draws (0: depths[1])
    needs_place: bool = False
    copies_units: bool = False  # depth counts later units: at most those after the block
    one_process: bool = False  # reads other blocks' weights: the sequential schedule only

    @property
    def max_searched_depth(self) -> int:
        return self.searched_depths or self.depths[1]

    @property
    def has_knobs(self) -> bool:
        """Whether depth or width change the head (reports name them only then)."""
        return self.has_width or self.depths[0] < self.depths[1]


def _linear(a: HeadArgs) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(a.channels, a.classes))


def _pool_linear(a: HeadArgs) -> nn.Module:
    # PredSim's prediction head (Nøkland & Eidnes): average pooling to at most 2048 features,
    # keeping a coarse spatial grid that global pooling (``linear``) throws away, then linear.
    h, w = pooled_size(a.channels, a.size)
    return nn.Sequential(nn.AdaptiveAvgPool2d((h, w)), nn.Flatten(),
                         nn.Linear(a.channels * h * w, a.classes))


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _conv(a: HeadArgs) -> nn.Module:
    # DGL's small CNN: 3x3 conv+BN+ReLU layers (the first strided when the map allows), pool, FC.
    c, h = a.channels, a.hidden(a.channels)
    stride = 2 if min(a.size) >= 4 else 1
    layers = [_conv_bn_relu(c, h, 3, stride)] + [_conv_bn_relu(h, h, 3) for _ in range(a.depth - 1)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(h, a.classes))


def _mlp_sr(a: HeadArgs) -> nn.Module:
    # DGL's mlp-sr: pool to a quarter of the map, 1x1 convs, pool to 2x2, a 3-layer MLP.
    c, h, classes = a.channels, a.hidden(a.channels), a.classes
    s = (max(2, a.size[0] // 4), max(2, a.size[1] // 4))
    convs = [_conv_bn_relu(c if i == 0 else h, h, 1) for i in range(a.depth)]
    hidden = 4 * h
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(s),
        *convs,
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * h, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, classes),
    )


class InvertedResidual(nn.Module):
    def __init__(self, c: int, expansion: int = 4) -> None:
        super().__init__()
        e = c * expansion
        self.body = nn.Sequential(
            _conv_bn_relu(c, e, 1),
            _conv_bn_relu(e, e, 3, groups=e),
            nn.Conv2d(e, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _ir(a: HeadArgs) -> nn.Module:
    # SEDONA's Aux-i: pointwise -> 3x3 depthwise (stride 2) -> (i-1) inverted residuals
    # (expansion 4) at 1.5x the input channels -> pointwise to a wide map -> pool -> FC.
    c, h = a.channels, a.hidden(a.channels, 1.5)
    final = min(2048, 4 * h)  # SEDONA uses 2048 at full width; scaled down for narrow nets
    stride = 2 if min(a.size) >= 2 else 1
    return nn.Sequential(
        _conv_bn_relu(c, h, 1),
        _conv_bn_relu(h, h, 3, stride, groups=h),
        *[InvertedResidual(h) for _ in range(a.depth - 1)],
        _conv_bn_relu(h, final, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(final, a.classes),
    )


AUX_HEADS: Registry[HeadFamily] = Registry("aux head")
AUX_HEADS.add("linear", HeadFamily("linear", _linear, (1, 1), False, "avg-pool + Linear (BWBPF)"))
AUX_HEADS.add("pool_linear", HeadFamily("pool_linear", _pool_linear, (1, 1), False,
                                        "avg-pool to <= 2048 features + Linear (PredSim)"))
AUX_HEADS.add("mlp_sr", HeadFamily("mlp_sr", _mlp_sr, (1, 3), True, "DGL mlp-sr"))
AUX_HEADS.add("conv", HeadFamily("conv", _conv, (1, 3), True, "DGL small CNN"))
AUX_HEADS.add("ir", HeadFamily("ir", _ir, (1, 4), True, "SEDONA inverted-residual head"))
# Depth up to 16 so a transferred head can copy as many units on a deeper net; a search draws
# 1..4 (on the small backbones it searches, a block rarely has more units after it).
AUX_HEADS.add("downstream", HeadFamily("downstream", downstream_head, (1, 16), True,
                                       "AugLocal: copies of later units", searched_depths=4,
                                       needs_place=True, copies_units=True))
# Not in the default space: its copies follow the next block's weights, so every block must
# train in one process (the sequential schedule).
AUX_HEADS.add("momentum", HeadFamily("momentum", momentum_head, (1, 4), False,
                                     "MAN: moving-average copies of the next units",
                                     needs_place=True, copies_units=True, one_process=True))


def check_schedule(families: Iterable[str], schedule: str) -> None:
    """A ConfigError where a head family cannot train under ``schedule``: ``momentum`` heads
    read the next block's weights after every step, so every block trains in one process, in
    turn (``sequential``)."""
    bad = sorted({f for f in families if AUX_HEADS.get(f).one_process})
    if bad and schedule != "sequential":
        raise ConfigError(f"schedule: {', '.join(bad)} heads follow the next block's weights, "
                          f"so they train with --schedule sequential, not {schedule}")


def list_aux_heads() -> list[str]:
    return AUX_HEADS.names()


class AuxHead(nn.Module):
    """One block's local objective: a logits head and, for ``predsim``, a similarity branch,
    for ``infopro`` a decoder. The branch decides the loss (pred without either), so the two
    cannot disagree."""

    def __init__(self, logits: nn.Module, sim: nn.Module | None = None,
                 decoder: nn.Module | None = None, weights: tuple[float, float] = (0.0, 1.0)
                 ) -> None:
        super().__init__()
        self.logits = logits
        self.sim = sim
        self.decoder = decoder
        self.weights = weights  # infopro: (reconstruction, cross entropy)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x)

    @property
    def needs_image(self) -> bool:
        return self.decoder is not None

    def loss(self, x: Tensor, y: Tensor, label_smoothing: float = 0.0,
             image: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(scalar loss, logits) for features ``x`` (N, C, H, W) and labels ``y`` (N,);
        ``image`` is the net's input batch, which the ``infopro`` decoder rebuilds."""
        logits = self.logits(x)
        pred = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if self.decoder is not None:
            if image is None:
                raise ValueError("the infopro loss rebuilds the input image: pass image=")
            recon = F.mse_loss(self.decoder(x).float(), image.float())
            w_recon, w_pred = self.weights
            return w_recon * recon + w_pred * pred, logits
        if self.sim is None:
            return pred, logits
        target = similarity(F.one_hot(y, logits.shape[1]))
        sim = F.mse_loss(similarity(self.sim(x)), target)
        return (1 - PREDSIM_BETA) * pred + PREDSIM_BETA * sim, logits


def make_aux_head(
    family: str,
    *,
    channels: int,
    size: tuple[int, int],
    num_classes: int,
    width: float = 1.0,
    depth: int = 1,
    loss: LocalLoss = "pred",
    min_channels: int = 0,
    place: HeadPlace | None = None,
) -> AuxHead:
    """Block ``place.block``'s head; ``place`` is needed by ``downstream`` heads and the
    ``infopro`` loss (a ConfigError without it)."""
    fam = AUX_HEADS.get(family)
    logits = fam.build(HeadArgs(channels, size, num_classes, width, depth, min_channels, place))
    if loss == "predsim":
        return AuxHead(logits, SimProjection(channels, size))
    if loss == "infopro":
        if place is None:
            raise ConfigError("loss: the infopro loss needs its head's place in the net "
                              "(HeadPlace)")
        return AuxHead(logits, decoder=Decoder(channels, place.in_channels, place.image_size),
                       weights=infopro_weights(place.block, place.num_blocks))
    return AuxHead(logits)
