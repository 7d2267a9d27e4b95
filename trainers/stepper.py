"""One training step of every block (the sequential schedule), and the non-finite guard."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from bwbpf.spaces import DecoupledNet
from bwbpf.spaces.copied_heads import momentum_for
from bwbpf.trainers.device import autocast
from bwbpf.trainers.optim import make_optimizer, make_schedule
from bwbpf.trainers.plan import NonFiniteLoss, TrainPlan


class Stepper:
    """One training step of every block; holds the per-block optimisers and schedules."""

    def __init__(self, net: DecoupledNet, plan: TrainPlan, total_steps: int) -> None:
        self.net, self.plan = net, plan
        # a momentum head's moving average, for this training's length (None: no such head)
        self.momentum = momentum_for(total_steps) if net.has_momentum_heads else None
        self.device = self._place_blocks()  # before the optimisers: they hold the parameters
        self._optimisers(total_steps)

    def _place_blocks(self) -> torch.device:
        """Where the blocks train (block 1's device); a subclass may move blocks here."""
        return next(self.net.parameters()).device

    def _optimisers(self, total_steps: int) -> None:
        """Block k's optimiser and schedule, over the parameters where they are now."""
        cfgs = self.net.decoupling.optim
        self.opts = [make_optimizer(self.net.block_parameters(k), cfg)
                     for k, cfg in enumerate(cfgs)]
        self.scheds = [make_schedule(o, total_steps, self.plan.warmup_fraction,
                                     self.plan.lr_schedule) for o in self.opts]

    def train_block(self, k: int, x: Tensor, y: Tensor, device: torch.device,
                    image: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Block k's whole update on its (detached) input: forward, local loss, backward,
        optimiser step. Returns the detached output and loss. Its graph is freed on return.
        ``image`` (the batch's input images) is needed by a loss that rebuilds them."""
        with autocast(device, self.plan.precision):
            out = self.net.blocks[k](x)  # x is detached: no gradient flows back to block k-1
            loss, _ = self.net.head_loss(k, out, y, self.plan.label_smoothing, image)
        self.opts[k].zero_grad(set_to_none=True)
        loss.backward()
        self.opts[k].step()
        self.scheds[k].step()
        return out.detach(), loss.detach()

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Trains on one batch; returns the (K,) detached losses of the blocks."""
        losses = self._blockwise(x, y) if self.plan.detach else self._deep_supervision(x, y)
        if self.momentum is not None:
            self.net.track_momentum(self.momentum)
        return losses

    def run_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], limit: int, epoch: int,
                  done: int) -> tuple[Tensor, int, int]:
        """Trains on at most ``limit`` batches; returns (per-block loss sums, images, steps).
        ``done`` steps came before (for messages and the periodic non-finite check)."""
        sums, seen, n = torch.zeros(self.net.num_blocks, device=self.device), 0, 0
        for x, y in batches:
            sums += self(x, y)
            seen, n = seen + len(y), n + 1
            if (done + n) % self.plan.check_every == 0:
                check_finite(sums, epoch, done + n)
            if n >= limit:
                break
        return sums, seen, n

    def _blockwise(self, x: Tensor, y: Tensor) -> Tensor:
        losses, h = [], x
        for k in range(self.net.num_blocks):
            h, loss = self.train_block(k, h, y, self.device, x)
            losses.append(loss)
        return torch.stack(losses)

    def _deep_supervision(self, x: Tensor, y: Tensor) -> Tensor:
        # The BWBPF public code's arithmetic: one graph, the sum of all losses, one backward.
        losses, h = [], x
        with autocast(self.device, self.plan.precision):
            for k, block in enumerate(self.net.blocks):
                h = block(h)
                losses.append(self.net.head_loss(k, h, y, self.plan.label_smoothing, x)[0])
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        for opt, sched in zip(self.opts, self.scheds):
            opt.step()
            sched.step()
        return torch.stack([loss.detach() for loss in losses])


def check_finite(sums: Tensor, epoch: int, steps: int, first_block: int = 0) -> None:
    """Raises NonFiniteLoss naming the first block whose loss sum is not finite; ``sums`` holds
    the sums of blocks ``first_block``, ``first_block + 1``, ..."""
    bad = (~torch.isfinite(sums)).nonzero().flatten().tolist()  # syncs the device
    if bad:
        raise NonFiniteLoss(f"block {first_block + bad[0] + 1} loss is not finite (epoch {epoch}, "
                            f"by step {steps})")
