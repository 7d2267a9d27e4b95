"""Cuts: what a valid cut set is, and cut placement by cost (a sequence of unit costs split
into K contiguous blocks)."""

from __future__ import annotations

from typing import Sequence

from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.errors import ConfigError


def check_cuts(cuts: Sequence[object], backbone: str, field: str = "cuts") -> None:
    """Cuts are integer unit indices of ``backbone``, strictly increasing, none at either end.
    Errors name ``field[i]`` (the JSON document passes ``cuts.units``)."""
    n, prev = get_backbone(backbone).num_units, 0
    for i, c in enumerate(cuts):
        where = f"{field}[{i}]"
        if not isinstance(c, int) or isinstance(c, bool):
            raise ConfigError(f"{where}: expected an integer unit index, got {c!r}")
        if not 1 <= c <= n - 1:
            raise ConfigError(f"{where}: {c} out of range; {backbone} has {n} units, valid "
                              f"cuts are 1..{n - 1}")
        if i > 0 and c <= prev:
            raise ConfigError(f"{where}: {c} must be greater than {field}[{i - 1}]={prev} "
                              "(increasing, no empty block)")
        prev = c


def balanced_cuts(costs: list[float], k: int) -> tuple[int, ...]:
    """The K-1 cuts that minimise the largest block's summed cost (linear partition, exact)."""
    n = len(costs)
    if not 1 <= k <= n:
        raise ConfigError(f"k: {k} blocks not in 1..{n} for {n} units")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[j][i]: smallest max-block cost splitting units [0, i) into j blocks; arg for backtrack
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    arg = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for s in range(j - 1, i):
                v = max(best[j - 1][s], prefix[i] - prefix[s])
                if v < best[j][i]:
                    best[j][i], arg[j][i] = v, s
    cuts, i = [], n
    for j in range(k, 1, -1):
        i = arg[j][i]
        cuts.append(i)
    return tuple(reversed(cuts))
