from __future__ import annotations

import math

import pytest
import torch

from bwbpf.spaces import AuxSpec, BlockOptim, ConfigError, Decoupling, build, get_backbone
from bwbpf.spaces.transfer import _stages

PAIRS = [("vgg8b", "vgg16"), ("vgg11", "vgg19"), ("vgg19", "vgg11"), ("vgg13", "vgg16"),
         ("resnet18", "resnet50"), ("resnet18", "resnet152"), ("resnet152", "resnet34"),
         ("resnet50", "resnet101")]


def sources(name: str) -> list[Decoupling]:
    n = get_backbone(name).num_units
    out = [Decoupling.paper_default(name), Decoupling.uniform(name, k=3)]
    cuts = (1, n // 2, n - 1)
    aux = (AuxSpec("conv", 2, 0.5), AuxSpec("ir", 3, 1.5, "predsim"), AuxSpec("mlp_sr", 1, 2.0))
    opts = (BlockOptim(lr=0.1), BlockOptim(lr=0.05), BlockOptim(lr=0.02), BlockOptim(lr=0.01))
    out.append(Decoupling(name, cuts, aux, opts, 0.5))
    return out


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_cuts_land_at_the_same_relative_depth(src: str, dst: str) -> None:
    stages = _stages(dst)
    for d in sources(src):
        t = d.transfer(dst)
        assert t.backbone == dst and t.num_blocks == d.num_blocks
        assert t.aux == d.aux and t.optim == d.optim and t.width == d.width
        after = t.relative_cuts()
        for i, (before, cut) in enumerate(zip(d.relative_cuts(), t.cuts)):
            start, n = stages[before.stage]
            ideal = max(1, start + math.floor(before.fraction * n + 0.5))
            pushed = i > 0 and ideal <= t.cuts[i - 1] and cut == t.cuts[i - 1] + 1
            pulled = cut < ideal and cut == t.cuts[-1] - (len(t.cuts) - 1 - i)  # at the end
            assert cut == ideal or pushed or pulled
            if cut == ideal and ideal < start + n:  # inside the same stage, nearest unit
                assert after[i].stage == before.stage
                assert abs(after[i].fraction - before.fraction) <= 0.5 / n + 1e-5


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_transferred_nets_build_and_run(src: str, dst: str) -> None:
    t = sources(src)[2].transfer(dst, width=0.125)
    assert t.width == 0.125
    net = build(t, 10, 3, 32, seed=0)
    h = torch.randn(2, 3, 32, 32)
    for k, block in enumerate(net.blocks):
        h = block(h)
        assert net.head_loss(k, h, torch.tensor([1, 2]))[1].shape == (2, 10)


def test_stage_boundaries_stay_stage_boundaries() -> None:
    # the paper's VGG-19 split (after conv 4, 8, 12) is VGG-11's stage split, and back
    assert Decoupling.paper_default("vgg19").transfer("vgg11").cuts == (2, 4, 6)
    assert Decoupling.paper_default("vgg11").transfer("vgg19").cuts == (4, 8, 12)
    # ResNet stage starts map to stage starts, basic <-> bottleneck
    assert Decoupling.paper_default("resnet18").transfer("resnet152").cuts == (4, 12, 48)


def test_transfer_is_deterministic_and_keeps_k_when_cuts_collide() -> None:
    d = Decoupling.uniform("resnet152", k=4)  # three cuts inside stage 3 (36 units)
    a, b = d.transfer("resnet18"), d.transfer("resnet18")
    assert a == b and a.num_blocks == 4 and a.cuts == (5, 6, 7)


def test_transfer_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="cannot transfer a vgg decoupling .* to resnet18"):
        Decoupling.paper_default("vgg11").transfer("resnet18")
    with pytest.raises(ConfigError, match=r"cuts\[2\]: stage 4 does not exist in vgg8b"):
        Decoupling.paper_default("vgg11").transfer("vgg8b")
    many = Decoupling.uniform("vgg19", k=12)
    with pytest.raises(ConfigError, match="vgg11 has 8 units and cannot hold 12 blocks"):
        many.transfer("vgg11")
