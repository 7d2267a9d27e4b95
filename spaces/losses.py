"""The local losses a block learns from through its aux head, and the pieces they add to it.

``pred``: cross entropy on the head's logits. ``predsim`` (Nøkland & Eidnes 2019): mostly the
match between the similarity matrices of a projection of the features and of the labels.
``infopro`` (Wang et al. 2021): cross entropy plus the reconstruction of the input image by a
small decoder, weighted by the block's position. The last block's loss is the global one,
through the network's own classifier.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

LocalLoss = Literal["pred", "predsim", "infopro"]
LOCAL_LOSSES: tuple[LocalLoss, ...] = ("pred", "predsim", "infopro")
PREDSIM_BETA = 0.99  # Nøkland & Eidnes: loss = (1 - beta) * pred + beta * sim
# PredSim's prediction head and similarity projection are avg-pooled to at most this many
# features (Nøkland & Eidnes' dim_in_decoder).
POOLED_MAX_DIM = 2048
# InfoPro (Wang et al. 2021), ResNet-32 K=4: (reconstruction, cross-entropy) weights move
# linearly from the first block's to the last's.
INFOPRO_FIRST, INFOPRO_LAST = (6.0, 0.0), (1.0, 2.0)
INFOPRO_HIDDEN = 12  # the decoder's hidden channels


def pooled_size(channels: int, size: tuple[int, int], max_dim: int = POOLED_MAX_DIM
                ) -> tuple[int, int]:
    """The largest square grid (no taller than the map; narrower where the map is) whose
    ``channels * h * w`` is at most ``max_dim``: the map is average-pooled to it, so where a
    feature is survives."""
    side = max(1, min(size[0], int((max_dim / channels) ** 0.5)))
    return side, min(size[1], side)


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
        self.pool = nn.AdaptiveAvgPool2d(pooled_size(c, size))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(x))


class Decoder(nn.Module):
    """InfoPro's decoder: the features upsampled (bilinear) to the image's size, 3x3 conv to 12
    channels, BN, ReLU, 3x3 conv to the image's channels. It rebuilds the normalised image
    (mean squared error; InfoPro's sigmoid and binary cross entropy assume pixels in [0, 1])."""

    def __init__(self, c: int, image_channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.size = image_size
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(c, INFOPRO_HIDDEN, 3, padding=1, bias=False),
                          nn.BatchNorm2d(INFOPRO_HIDDEN), nn.ReLU(inplace=True)),
            nn.Conv2d(INFOPRO_HIDDEN, image_channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(F.interpolate(x, size=self.size, mode="bilinear", align_corners=False))


def infopro_weights(block: int, num_blocks: int) -> tuple[float, float]:
    """(reconstruction, cross-entropy) weights of block ``block`` of ``num_blocks``: InfoPro's
    linear schedule, from (6, 0) at the first block to (1, 2) at the last (whose global loss
    takes the place of its local one, so aux blocks stop short of it), divided by their sum.
    The ratio is InfoPro's; the sum (6 down to 3) would only scale the learning rate, which the
    search tunes, and at 6 it made the search's larger rates diverge."""
    t = block / max(1, num_blocks - 1)
    (r0, c0), (r1, c1) = INFOPRO_FIRST, INFOPRO_LAST
    recon, ce = r0 + t * (r1 - r0), c0 + t * (c1 - c0)
    return recon / (recon + ce), ce / (recon + ce)


def final_head_loss(
    classifier: nn.Module, x: Tensor, y: Tensor, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The last block's global loss through the network's own classifier."""
    logits = classifier(x)
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits
