"""BP-free for real: a block's update must not depend on anything after it."""

from __future__ import annotations

import pytest
import torch

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, build
from bwbpf.trainers import Data, TrainPlan, fit

CUTS = (2, 4)
# Block 1's head: a small CNN, and a copy of later units learning with InfoPro's loss (its
# decoder rebuilds the input image, which the trainer hands to the block).
FIRST = {"conv": AuxSpec("conv", 1, 0.5),
         "downstream+infopro": AuxSpec("downstream", 2, 0.5, "infopro", 8)}


def two_nets(first: AuxSpec = FIRST["conv"]) -> tuple:
    base = Decoupling("vgg8b", CUTS, (first, AuxSpec("linear")), (BlockOptim(),) * 3,
                      width=0.125)
    # Same first block and head; another aux head for block 2 and a different later optimiser.
    other = Decoupling("vgg8b", CUTS, (first, AuxSpec("downstream", 1, 2.0, "infopro")),
                       (BlockOptim(), BlockOptim(lr=0.3), BlockOptim(lr=0.2)), width=0.125)
    a, b = build(base, 10, 3, 16, seed=0), build(other, 10, 3, 16, seed=1)
    b.blocks[0].load_state_dict(a.blocks[0].state_dict())
    b.aux_heads[0].load_state_dict(a.aux_heads[0].state_dict())
    with torch.no_grad():  # scale the later blocks, so their outputs and gradients differ
        for p in b.blocks[1:].parameters():
            p.mul_(3.0)
    return a, b


def block1_after_training(detach: bool, data: Data, first: AuxSpec = FIRST["conv"]
                          ) -> tuple[list, list]:
    a, b = two_nets(first)
    plan = TrainPlan(epochs=1, max_steps=3, batch_size=32, device="cpu", detach=detach)
    fit(a, data, plan)
    fit(b, data, plan)
    return list(a.blocks[0].state_dict().values()), list(b.blocks[0].state_dict().values())


@pytest.mark.parametrize("first", FIRST)
def test_block1_is_blind_to_later_blocks(synthetic: Data, first: str) -> None:
    pa, pb = block1_after_training(True, synthetic, FIRST[first])
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    a, _ = two_nets(FIRST[first])
    # and it did train: the weights moved from their initial values
    assert not all(torch.equal(x, y) for x, y in zip(pa, a.blocks[0].state_dict().values()))


@pytest.mark.parametrize("first", FIRST)
def test_same_check_fails_without_detach(synthetic: Data, first: str) -> None:
    # The BWBPF public code's behaviour: later losses reach block 1, so block 1 differs.
    pa, pb = block1_after_training(False, synthetic, FIRST[first])
    assert not all(torch.equal(x, y) for x, y in zip(pa, pb))


def test_no_gradient_reaches_an_earlier_block(synthetic: Data) -> None:
    """The trainer's own hand-off: block 1's update returns the tensor block 2 trains on; block
    2's update leaves block 1 without a gradient (and the hand-off carries no graph)."""
    from bwbpf.trainers.stepper import Stepper

    a, _ = two_nets()
    step = Stepper(a, TrainPlan(epochs=1, batch_size=8, device="cpu"), total_steps=1)
    x, y = synthetic.train.x[:8], synthetic.train.y[:8]
    h, _ = step.train_block(0, x, y, step.device)
    assert all(p.grad is not None for p in a.blocks[0].parameters())  # its own loss
    for p in a.blocks[0].parameters():
        p.grad = None
    assert not h.requires_grad and h.grad_fn is None
    step.train_block(1, h, y, step.device)
    assert all(p.grad is None for p in a.blocks[0].parameters())
    assert all(p.grad is not None for p in a.blocks[1].parameters())


VIT = ("torchvision:VisionTransformer?image_size=16&patch_size=4&num_layers=2&num_heads=2"
       "&hidden_dim=16&mlp_dim=32")


@pytest.mark.integration  # torchvision networks
@pytest.mark.parametrize("name", ["torchvision:mobilenet_v3_small", "torchvision:efficientnet_b0",
                                  "torchvision:regnet_y_400mf", VIT])
def test_block1_of_a_named_network_is_blind_to_later_blocks(synthetic: Data, name: str) -> None:
    """The same check on the torchvision families the tool is shown on: two nets that differ
    only after block 1 leave block 1 bit-identical after training."""
    cuts = (1, 2)
    base = Decoupling(name, cuts, (AuxSpec("linear"), AuxSpec("linear")), (BlockOptim(),) * 3)
    other = Decoupling(name, cuts, (AuxSpec("linear"), AuxSpec("pool_linear")),
                       (BlockOptim(), BlockOptim(lr=0.3), BlockOptim(lr=0.2)))
    a, b = build(base, 10, 3, 16, seed=0), build(other, 10, 3, 16, seed=1)
    b.blocks[0].load_state_dict(a.blocks[0].state_dict())
    b.aux_heads[0].load_state_dict(a.aux_heads[0].state_dict())
    start = [v.clone() for v in a.blocks[0].state_dict().values()]
    plan = TrainPlan(epochs=1, max_steps=3, batch_size=32, device="cpu")
    fit(a, synthetic, plan)
    fit(b, synthetic, plan)
    pa, pb = a.blocks[0].state_dict().values(), b.blocks[0].state_dict().values()
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert not all(torch.equal(x, y) for x, y in zip(start, a.blocks[0].state_dict().values()))
