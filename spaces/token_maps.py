"""Token sequences between blocks: a unit of a named network whose output is a token sequence
(N, L, D) (a vision transformer's) or a vector (N, F) hands it on as a map (N, D, L, 1) or
(N, F, 1, 1), and the next unit turns it back, so every aux head reads a map and pooling over
the map is pooling over tokens."""

from __future__ import annotations

from torch import Tensor, nn


class AsMap(nn.Module):
    """A token sequence (N, L, D) or vector (N, F) as a map (N, D, L, 1) or (N, F, 1, 1)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            return x.transpose(1, 2).unsqueeze(-1)
        return x.reshape(*x.shape[:2], *([1] * (4 - x.dim())))


class FromMap(nn.Module):
    """The inverse of ``AsMap`` for an original of ``rank`` dimensions."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def forward(self, x: Tensor) -> Tensor:
        if self.rank == 3:
            return x.squeeze(-1).transpose(1, 2)
        return x.flatten(1) if self.rank == 2 else x


def as_maps(module: nn.Module, k: int, shapes: tuple[tuple[int, ...], ...]) -> nn.Module:
    """Piece ``k`` taking and giving maps: a token sequence or vector in (the piece before it
    gave one) is turned back; one out (but the classifier's) is handed on as a map."""
    rank = len(shapes[k - 1]) + 1 if k else 4
    layers: list[nn.Module] = [FromMap(rank)] if rank != 4 else []
    layers.append(module)
    if k < len(shapes) and len(shapes[k]) != 3:
        layers.append(AsMap())
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)
