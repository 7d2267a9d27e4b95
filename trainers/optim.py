"""Per-block optimisers and the warm-up + cosine learning-rate schedule."""

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


def make_schedule(opt: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total_steps, warmup_fraction))
