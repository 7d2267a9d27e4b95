"""BP-free for real: a block's update must not depend on anything after it."""

from __future__ import annotations

import torch

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, build
from bwbpf.trainers import Data, TrainPlan, fit

CUTS = (2, 4)


def two_nets() -> tuple:
    base = Decoupling("vgg8b", CUTS, (AuxSpec("conv", 1, 0.5), AuxSpec("linear")),
                      (BlockOptim(),) * 3, width=0.125)
    # Same first block and head; another aux head for block 2 and a different later optimiser.
    other = Decoupling("vgg8b", CUTS, (AuxSpec("conv", 1, 0.5), AuxSpec("ir", 3, 2.0)),
                       (BlockOptim(), BlockOptim(lr=0.3), BlockOptim(lr=0.2)), width=0.125)
    a, b = build(base, 10, 3, 16, seed=0), build(other, 10, 3, 16, seed=1)
    b.blocks[0].load_state_dict(a.blocks[0].state_dict())
    b.aux_heads[0].load_state_dict(a.aux_heads[0].state_dict())
    with torch.no_grad():  # scale the later blocks, so their outputs and gradients differ
        for p in b.blocks[1:].parameters():
            p.mul_(3.0)
    return a, b


def block1_after_training(detach: bool, data: Data) -> tuple[list, list]:
    a, b = two_nets()
    plan = TrainPlan(epochs=1, max_steps=3, batch_size=32, device="cpu", detach=detach)
    fit(a, data, plan)
    fit(b, data, plan)
    return list(a.blocks[0].state_dict().values()), list(b.blocks[0].state_dict().values())


def test_block1_is_blind_to_later_blocks(synthetic: Data) -> None:
    pa, pb = block1_after_training(True, synthetic)
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    a, _ = two_nets()
    # and it did train: the weights moved from their initial values
    assert not all(torch.equal(x, y) for x, y in zip(pa, a.blocks[0].state_dict().values()))


def test_same_check_fails_without_detach(synthetic: Data) -> None:
    # The BWBPF public code's behaviour: later losses reach block 1, so block 1 differs.
    pa, pb = block1_after_training(False, synthetic)
    assert not all(torch.equal(x, y) for x, y in zip(pa, pb))


def test_no_gradient_reaches_an_earlier_block(synthetic: Data) -> None:
    a, _ = two_nets()
    x, y = synthetic.train.x[:8], synthetic.train.y[:8]
    h = a.blocks[0](x).detach()
    out = a.blocks[1](h)
    a.head_loss(1, out, y)[0].backward()
    assert all(p.grad is None for p in a.blocks[0].parameters())
    assert all(p.grad is not None for p in a.blocks[1].parameters())
