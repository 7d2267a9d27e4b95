"""One training step of every block (the sequential schedule), and the non-finite guard."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from bwbpf.spaces import DecoupledNet
from bwbpf.trainers.device import autocast
from bwbpf.trainers.optim import make_optimizer, make_schedule
from bwbpf.trainers.plan import NonFiniteLoss, TrainPlan


class Stepper:
    """One training step of every block; holds the per-block optimisers and schedules."""

    def __init__(self, net: DecoupledNet, plan: TrainPlan, total_steps: int) -> None:
        self.net, self.plan = net, plan
        self.device = next(net.parameters()).device
        cfgs = net.decoupling.optim
        self.opts = [make_optimizer(net.block_parameters(k), cfgs[k]) for k in range(len(cfgs))]
        self.scheds = [make_schedule(o, total_steps, plan.warmup_fraction) for o in self.opts]

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Trains on one batch; returns the (K,) detached losses of the blocks."""
        return self._blockwise(x, y) if self.plan.detach else self._deep_supervision(x, y)

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
        for k, block in enumerate(self.net.blocks):
            with autocast(self.device, self.plan.precision):
                out = block(h.detach())  # the boundary: no gradient flows back into block k-1
                loss, _ = self.net.head_loss(k, out, y, self.plan.label_smoothing)
            self.opts[k].zero_grad(set_to_none=True)
            loss.backward()  # frees block k's graph before block k+1 runs
            self.opts[k].step()
            self.scheds[k].step()
            losses.append(loss.detach())
            h = out.detach()
        return torch.stack(losses)

    def _deep_supervision(self, x: Tensor, y: Tensor) -> Tensor:
        # The BWBPF public code's arithmetic: one graph, the sum of all losses, one backward.
        losses, h = [], x
        with autocast(self.device, self.plan.precision):
            for k, block in enumerate(self.net.blocks):
                h = block(h)
                losses.append(self.net.head_loss(k, h, y, self.plan.label_smoothing)[0])
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        for opt, sched in zip(self.opts, self.scheds):
            opt.step()
            sched.step()
        return torch.stack([loss.detach() for loss in losses])


def check_finite(sums: Tensor, epoch: int, steps: int) -> None:
    bad = (~torch.isfinite(sums)).nonzero().flatten().tolist()  # syncs the device
    if bad:
        raise NonFiniteLoss(f"block {bad[0] + 1} loss is not finite (epoch {epoch}, "
                            f"by step {steps})")
