"""Auxiliary heads ("aux heads") and the local losses that train a block through them.

Every family builds from (channels, spatial size, classes, width, depth) of the unit it sits
on. ``width`` multiplies the head's own channels relative to its input channels; ``depth`` is
the number of layers of the family's repeated part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from bwbpf.spaces.backbones import scaled
from bwbpf.spaces.registry import Registry

LocalLoss = Literal["pred", "predsim"]
LOCAL_LOSSES: tuple[LocalLoss, ...] = ("pred", "predsim")
PREDSIM_BETA = 0.99  # Nøkland & Eidnes: loss = (1 - beta) * pred + beta * sim
SIM_MAX_DIM = 2048  # the similarity projection is avg-pooled to at most this many features

HeadBuilder = Callable[[int, tuple[int, int], int, float, int], nn.Module]


@dataclass(frozen=True)
class HeadFamily:
    name: str
    build: HeadBuilder  # (channels, (H, W), classes, width, depth) -> logits module
    depths: tuple[int, int]  # inclusive range of the depth knob
    has_width: bool
    summary: str


def _linear(c: int, size: tuple[int, int], classes: int, width: float, depth: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _conv(c: int, size: tuple[int, int], classes: int, width: float, depth: int) -> nn.Module:
    # DGL's small CNN: 3x3 conv+BN+ReLU layers (the first strided when the map allows), pool, FC.
    h = scaled(c, width)
    stride = 2 if min(size) >= 4 else 1
    layers = [_conv_bn_relu(c, h, 3, stride)] + [_conv_bn_relu(h, h, 3) for _ in range(depth - 1)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(h, classes))


def _mlp_sr(c: int, size: tuple[int, int], classes: int, width: float, depth: int) -> nn.Module:
    # DGL's mlp-sr: pool to a quarter of the map, 1x1 convs, pool to 2x2, a 3-layer MLP.
    h = scaled(c, width)
    s = (max(2, size[0] // 4), max(2, size[1] // 4))
    convs = [_conv_bn_relu(c if i == 0 else h, h, 1) for i in range(depth)]
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


def _ir(c: int, size: tuple[int, int], classes: int, width: float, depth: int) -> nn.Module:
    # SEDONA's Aux-i: pointwise -> 3x3 depthwise (stride 2) -> (i-1) inverted residuals
    # (expansion 4) at 1.5x the input channels -> pointwise to a wide map -> pool -> FC.
    h = scaled(c, 1.5 * width)
    final = min(2048, 4 * h)  # SEDONA uses 2048 at full width; scaled down for narrow nets
    stride = 2 if min(size) >= 2 else 1
    return nn.Sequential(
        _conv_bn_relu(c, h, 1),
        _conv_bn_relu(h, h, 3, stride, groups=h),
        *[InvertedResidual(h) for _ in range(depth - 1)],
        _conv_bn_relu(h, final, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(final, classes),
    )


AUX_HEADS: Registry[HeadFamily] = Registry("aux head")
AUX_HEADS.add("linear", HeadFamily("linear", _linear, (1, 1), False, "avg-pool + Linear (BWBPF)"))
AUX_HEADS.add("mlp_sr", HeadFamily("mlp_sr", _mlp_sr, (1, 3), True, "DGL mlp-sr"))
AUX_HEADS.add("conv", HeadFamily("conv", _conv, (1, 3), True, "DGL small CNN"))
AUX_HEADS.add("ir", HeadFamily("ir", _ir, (1, 4), True, "SEDONA inverted-residual head"))


def list_aux_heads() -> list[str]:
    return AUX_HEADS.names()


def similarity(x: Tensor) -> Tensor:
    """Cosine similarity matrix of centred, flattened rows: (N, ...) -> (N, N)."""
    x = x.flatten(1).float()
    x = x - x.mean(dim=1, keepdim=True)
    x = F.normalize(x, dim=1, eps=1e-8)
    return (x @ x.t()).clamp(-1, 1)


class SimProjection(nn.Module):
    """PredSim's similarity branch: a 3x3 conv whose pooled output is compared by similarity."""

    def __init__(self, c: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        side = max(1, min(size[0], int((SIM_MAX_DIM / c) ** 0.5)))
        self.pool = nn.AdaptiveAvgPool2d((side, min(size[1], side)))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(x))


class AuxHead(nn.Module):
    """One block's local objective: a logits head and, for ``predsim``, a similarity branch.
    The branch decides the loss (pred without it, predsim with it), so the two cannot
    disagree."""

    def __init__(self, logits: nn.Module, sim: nn.Module | None = None) -> None:
        super().__init__()
        self.logits = logits
        self.sim = sim

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x)

    def loss(self, x: Tensor, y: Tensor, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
        """(scalar loss, logits) for features ``x`` (N, C, H, W) and labels ``y`` (N,)."""
        logits = self.logits(x)
        pred = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
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
) -> AuxHead:
    fam = AUX_HEADS.get(family)
    logits = fam.build(channels, size, num_classes, width, depth)
    sim = SimProjection(channels, size) if loss == "predsim" else None
    return AuxHead(logits, sim)


def final_head_loss(
    classifier: nn.Module, x: Tensor, y: Tensor, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The last block's global loss through the network's own classifier."""
    logits = classifier(x)
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits



