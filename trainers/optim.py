"""Per-block optimisers and the learning-rate schedules: warm-up + cosine (the default) and
one-cycle (torch's OneCycleLR with its defaults), both as LambdaLR multipliers so that a
scheduler's state is its step count and checkpoints resume either."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from bwbpf.spaces import BlockOptim


def make_optimizer(params: list[nn.Parameter], cfg: BlockOptim) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up over the first fraction, then cosine to zero."""
    warm = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def one_cycle(total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4) -> Callable[[int], float]:
    """LR multiplier per step of torch's OneCycleLR (cosine anneal, its defaults): from
    1/div_factor up to 1 over the first ``pct_start`` of the steps, then down to
    1/(div_factor * final_div_factor). The same arithmetic as OneCycleLR, step for step."""
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    up_end, down_end = float(pct_start * total_steps) - 1, float(total_steps - 1)

    def anneal(a: float, b: float, pct: float) -> float:
        return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)

    def factor(step: int) -> float:
        s = min(step, down_end)
        if s <= up_end:
            return anneal(start, 1.0, s / up_end)  # s <= up_end only when up_end > 0 (s >= 0)
        return anneal(1.0, end, (s - up_end) / max(down_end - up_end, 1e-12))

    return factor


def make_schedule(opt: torch.optim.Optimizer, total_steps: int, warmup_fraction: float,
                  kind: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """``kind`` is the plan's lr_schedule: "cosine" (warm-up over ``warmup_fraction``, then
    cosine to zero) or "onecycle" (``warmup_fraction`` unused)."""
    if kind == "onecycle":
        return torch.optim.lr_scheduler.LambdaLR(opt, one_cycle(total_steps))
    if kind != "cosine":
        raise ValueError(f"unknown lr schedule {kind!r}")
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total_steps, warmup_fraction))
