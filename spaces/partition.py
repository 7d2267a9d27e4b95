"""Cut placement by cost: split a sequence of unit costs into K contiguous blocks."""

from __future__ import annotations

from bwbpf.spaces.errors import ConfigError


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
