from __future__ import annotations

import pytest
import torch

from bwbpf.spaces import (
    AuxSpec,
    BlockOptim,
    ConfigError,
    Decoupling,
    build,
    get_backbone,
    list_aux_heads,
    list_backbones,
    stage_boundaries,
)

HEADS = [AuxSpec("linear"), AuxSpec("conv", 2, 0.5), AuxSpec("mlp_sr", 1, 0.5),
         AuxSpec("ir", 2, 0.5, "predsim")]


def cut_sets(name: str) -> list[tuple[int, ...]]:
    n = get_backbone(name).num_units
    return [(1,), (n - 1,), Decoupling.paper_default(name).cuts, Decoupling.uniform(name).cuts]


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_backbone_builds_runs_and_declares_true_shapes(name: str, shape: tuple) -> None:
    c, h, w = shape
    for cuts in cut_sets(name):
        k = len(cuts) + 1
        aux = tuple(HEADS[i % len(HEADS)] for i in range(k - 1))
        d = Decoupling(name, cuts, aux, (BlockOptim(),) * k, width=0.125)
        net = build(d, 10, c, (h, w), seed=0)
        x = torch.randn(2, c, h, w)
        y = torch.tensor([3, 7])
        for b, block in enumerate(net.blocks):
            x = block(x)
            info = net.block_output_info(b)
            # The head was sized from the declared shape; the real tensor must agree.
            assert tuple(x.shape[1:]) == (info.channels, *info.size)
            loss, logits = net.head_loss(b, x, y)
            assert logits.shape == (2, 10) and torch.isfinite(loss)
        assert net.num_blocks == k


@pytest.mark.parametrize("name", list_backbones())
def test_declared_unit_shapes_match_a_forward_pass(name: str) -> None:
    spec = get_backbone(name)
    infos, units = spec.build_units(width=0.125, in_channels=1, image_size=(28, 28))
    assert len(infos) == len(units) == spec.num_units
    x = torch.randn(2, 1, 28, 28)
    for info, unit in zip(infos, units):
        x = unit(x)
        assert tuple(x.shape[1:]) == (info.channels, *info.size)


def test_resnet_families_and_stages() -> None:
    r50 = get_backbone("resnet50")
    infos = r50.describe(width=1.0)
    assert infos[0].kind == "stem" and infos[-1].kind == "bottleneck"
    assert infos[-1].channels == 2048 and infos[-1].size == (4, 4)
    assert get_backbone("resnet18").describe()[-1].channels == 512
    # Stage boundaries are where residual stages begin: after the stem, and at 2, 3, 4.
    assert stage_boundaries(r50.stage_of_units()) == [1, 4, 8, 14]


def test_width_multiplier_scales_channels() -> None:
    full = get_backbone("vgg11").describe(width=1.0)
    half = get_backbone("vgg11").describe(width=0.5)
    assert [u.channels for u in half] == [u.channels // 2 for u in full]


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown backbone 'vgg99'.*resnet18"):
        get_backbone("vgg99")
    with pytest.raises(ConfigError, match="unknown aux head 'mlp'.*mlp_sr"):
        AuxSpec("mlp")
    assert {"linear", "mlp_sr", "conv", "ir"} <= set(list_aux_heads())


def test_paper_default_matches_the_papers_stage_splits() -> None:
    # BWBPF's VGG-19 blocks end after conv 4, 8, 12; ResNets cut at the starts of stages 2-4.
    assert Decoupling.paper_default("vgg19").cuts == (4, 8, 12)
    assert Decoupling.paper_default("resnet50").cuts == (4, 8, 14)
    assert Decoupling.paper_default("resnet18").cuts == (3, 5, 7)
    d = Decoupling.paper_default("resnet101")
    assert d.num_blocks == 4 and all(a.family == "linear" for a in d.aux)


def test_build_rejects_impossible_inputs() -> None:
    d = Decoupling.paper_default("vgg11")
    with pytest.raises(ConfigError, match="classes"):
        build(d, 1, 3, 32)
