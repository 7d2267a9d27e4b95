"""The momentum head family (MAN): copies of the next units that follow their weights by a
moving average, learnable biases, and what follows from reading another block's weights."""

from __future__ import annotations

import copy

import pytest
import torch

from bwbpf.spaces import AuxSpec, BlockOptim, ConfigError, Decoupling, build
from bwbpf.spaces.copied_heads import MomentumHead, momentum_for, momentum_units
from bwbpf.spaces.heads import check_schedule
from bwbpf.spaces.transfer import transfer_depth
from bwbpf.trainers import TrainPlan, fit, load_data
from bwbpf.trainers.stepper import Stepper


def decoupling(backbone: str = "resnet18", depth: int = 1) -> Decoupling:
    return Decoupling(backbone, (3, 5), (AuxSpec("momentum", depth), AuxSpec("linear")),
                      (BlockOptim(),) * 3, width=0.125)


def head(net: torch.nn.Module, k: int = 0) -> MomentumHead:
    h = net.aux_heads[k].logits  # type: ignore[index, union-attr]
    assert isinstance(h, MomentumHead)
    return h


def pairs(net: torch.nn.Module, h: MomentumHead) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(c, u) for copy_, i in zip(h.copies, h.units)
            for c, u in zip(copy_.parameters(), net.unit(i).parameters(), strict=True)]


@pytest.mark.parametrize("backbone", ["vgg8b", "resnet18", "resnet50"])
def test_a_momentum_head_starts_as_the_next_units_and_is_not_learned(backbone: str) -> None:
    net = build(decoupling(backbone, depth=2), 10, 3, 16, seed=0)
    h = head(net)
    assert h.units == (3, 4)
    assert all(torch.equal(c, u) for c, u in pairs(net, h))
    learned = {id(p) for p in net.block_parameters(0)}
    assert not any(id(p) in learned for p in h.copies.parameters())
    assert all(id(p) in learned for p in (*h.biases.parameters(), *h.out.parameters()))
    x = torch.randn(4, 3, 16, 16)
    for k in range(3):
        x = net.blocks[k](x)
        if k == 0:
            assert net.head(0)(x).shape == (4, 10)


def test_one_step_moves_the_copies_by_the_moving_average_and_trains_the_block_through_them(
) -> None:
    torch.manual_seed(0)
    net = build(decoupling(), 10, 3, 16, seed=0)
    h = head(net)
    step = Stepper(net, TrainPlan(device="cpu", batch_size=8), total_steps=2000)
    m = momentum_for(2000)
    assert m == pytest.approx(1 - 1 / 40)  # a lag of 2% of the steps
    before = [c.detach().clone() for c, _ in pairs(net, h)]
    block0 = [p.detach().clone() for p in net.blocks[0].parameters()]
    step(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))
    after = pairs(net, h)
    moved = 0
    for old, (c, u) in zip(before, after):
        torch.testing.assert_close(c, m * old + (1 - m) * u, rtol=0, atol=1e-6)
        moved += int(not torch.equal(c, old))
    assert moved > 0  # the units it follows were trained, so the copies moved
    assert all(c.grad is None for c, _ in after)
    assert any(not torch.equal(a, b) for a, b in zip(block0, net.blocks[0].parameters()))


def test_a_momentum_net_resumes_with_the_same_arithmetic() -> None:
    data = load_data("synthetic", train_subset=64, val_size=16, seed=0, download=False)
    plan = TrainPlan(device="cpu", batch_size=32, epochs=2, seed=0)
    whole = build(decoupling(), 10, 3, 16, seed=0)
    states: list[dict] = []
    fit(whole, data, plan, on_checkpoint=lambda state: states.append(copy.deepcopy(state)))
    resumed = build(decoupling(), 10, 3, 16, seed=0)
    fit(resumed, data, plan, resume=states[0])
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_depth_counts_the_units_after_the_block() -> None:
    assert momentum_units(3, 9, 2) == [4, 5]
    assert momentum_units(7, 9, 4) == [8]
    with pytest.raises(ConfigError, match=r"aux\[0\]\.depth.*momentum head copies units that "
                                          r"follow its block, and 1 follow block 1"):
        Decoupling("resnet18", (8,), (AuxSpec("momentum", 2),), (BlockOptim(),) * 2)
    # carried to a deeper net, the depth scales like a downstream head's
    carried = transfer_depth(AuxSpec("momentum", 2), after_src=6, after_dst=12)
    assert carried.depth == 4


def test_momentum_heads_train_in_one_process_only() -> None:
    check_schedule(["momentum", "linear"], "sequential")
    check_schedule(["downstream", "linear"], "pipelined")
    for schedule in ("pipelined", "distributed"):
        with pytest.raises(ConfigError, match=f"not {schedule}$"):
            check_schedule(["linear", "momentum"], schedule)
    data = load_data("synthetic", train_subset=32, val_size=8, seed=0, download=False)
    with pytest.raises(ConfigError, match="not pipelined"):
        fit(build(decoupling(), 10, 3, 16, seed=0), data,
            TrainPlan(device="cpu", batch_size=16, schedule="pipelined"))


def test_a_search_draws_momentum_depths_that_fit_after_the_block() -> None:
    import optuna

    from bwbpf.spaces import SearchSpace, get_backbone, sample

    space = SearchSpace(backbones=("vgg8b",), heads=("momentum",), heads_tied="free",
                        max_blocks=4)
    n = get_backbone("vgg8b").num_units
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    clipped = 0
    for _ in range(60):
        trial = study.ask()
        d = sample(trial, space)  # a depth past the net's end would be a ConfigError here
        for i, (aux, cut) in enumerate(zip(d.aux, d.cuts)):
            drawn = trial.params[f"aux_{i}_depth"]
            assert aux.depth == min(drawn, n - cut)
            clipped += drawn > n - cut
        study.tell(trial, 0.0)
    assert clipped > 0  # the rule was exercised


def test_the_moving_average_lags_by_a_share_of_the_training() -> None:
    assert momentum_for(100) == pytest.approx(0.9)  # at least a 10-step lag
    assert momentum_for(50_000) == pytest.approx(1 - 1 / 1000)
    assert momentum_for(240) < momentum_for(2400) < momentum_for(24_000) < 1
