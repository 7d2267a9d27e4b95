"""The downstream head family (copies of later units, AugLocal), the infopro local loss
(InfoPro's decoder and weights) and the head channel floor."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bwbpf.spaces import (
    AuxSpec,
    BlockOptim,
    ConfigError,
    Decoupling,
    HeadPlace,
    build,
    get_backbone,
    list_backbones,
    make_aux_head,
)
from bwbpf.spaces.backbone_spec import scaled
from bwbpf.spaces.copied_heads import downstream_units, pyramidal_depth
from bwbpf.spaces.losses import INFOPRO_FIRST, INFOPRO_LAST, Decoder, infopro_weights

WIDTH, SIZE = 0.125, (32, 32)


def copies(head: nn.Module) -> list[nn.Module]:
    """The copied units of a downstream head: everything before its pool + flatten + linear."""
    return list(head.logits.children())[:-3]  # type: ignore[union-attr]


@pytest.mark.parametrize("backbone", list_backbones())
def test_downstream_heads_copy_the_units_after_first_middle_and_last_cuts(backbone: str) -> None:
    spec = get_backbone(backbone)
    infos = spec.describe(width=WIDTH, image_size=SIZE)
    n = len(infos)
    for unit in (0, (n - 2) // 2, n - 2):  # after the first unit, the middle one, the last cut
        after = n - 1 - unit
        for depth in sorted({1, min(3, after)}):
            on = infos[unit]
            head = make_aux_head("downstream", channels=on.channels, size=on.size,
                                 num_classes=10, width=1.0, depth=depth,
                                 place=HeadPlace(backbone, WIDTH, unit, image_size=SIZE))
            picked = downstream_units(unit, n, depth)
            layers = copies(head)
            assert len(layers) == len(picked) == depth
            h = torch.randn(2, on.channels, *on.size)
            for layer, i in zip(layers, picked):
                h = layer(h)
                # a copy has the shape of the unit it copies (width 1: its channels)
                assert tuple(h.shape[1:]) == (infos[i].channels, *infos[i].size), (unit, i)
            assert head(torch.randn(2, on.channels, *on.size)).shape == (2, 10)


def test_downstream_units_are_even_and_end_at_the_last() -> None:
    assert downstream_units(1, 6, 4) == [2, 3, 4, 5]
    assert downstream_units(0, 9, 2) == [4, 8]
    assert downstream_units(0, 9, 3) == [3, 5, 8]  # round(8/3)=3, round(16/3)=5, 8
    assert downstream_units(3, 6, 9) == [4, 5]  # never more than the units that follow
    for unit, n, d in ((0, 51, 16), (10, 51, 7), (2, 13, 5)):
        got = downstream_units(unit, n, d)
        assert got[-1] == n - 1 and len(set(got)) == len(got) == d and got == sorted(got)


def test_downstream_width_scales_the_copies_and_the_floor_lifts_them() -> None:
    place = HeadPlace("resnet18", 0.25, 1, image_size=SIZE)
    infos = get_backbone("resnet18").describe(width=0.25, image_size=SIZE)
    on = infos[1]
    half = make_aux_head("downstream", channels=on.channels, size=on.size, num_classes=10,
                         width=0.5, depth=2, place=place)
    floored = make_aux_head("downstream", channels=on.channels, size=on.size, num_classes=10,
                            width=0.5, depth=2, min_channels=48, place=place)
    picked = downstream_units(1, len(infos), 2)
    x = torch.randn(2, on.channels, *on.size)
    for head, floor in ((half, 0), (floored, 48)):
        h = x
        for layer, i in zip(copies(head), picked):
            h = layer(h)
            assert h.shape[1] == max(floor, scaled(infos[i].channels, 0.5))


def test_the_floor_reaches_every_family_with_own_channels() -> None:
    for family, factor in (("conv", 1.0), ("mlp_sr", 1.0), ("ir", 1.5)):
        thin = make_aux_head(family, channels=16, size=(8, 8), num_classes=10, width=0.5)
        floored = make_aux_head(family, channels=16, size=(8, 8), num_classes=10, width=0.5,
                                min_channels=32)
        first = [m for m in floored.modules() if isinstance(m, nn.Conv2d)][0]
        assert first.out_channels == 32 > scaled(16, 0.5 * factor)
        assert sum(p.numel() for p in floored.parameters()) > sum(
            p.numel() for p in thin.parameters())


def test_a_downstream_head_cannot_copy_more_units_than_follow() -> None:
    optim = (BlockOptim(),) * 2
    Decoupling("vgg8b", (4,), (AuxSpec("downstream", 2),), optim)  # units 4 and 5 follow
    with pytest.raises(ConfigError, match=r"^aux\[0\]\.depth: 3: .* 2 follow block 1"):
        Decoupling("vgg8b", (4,), (AuxSpec("downstream", 3),), optim)


def test_downstream_depth_transfers_by_the_relative_rule() -> None:
    d = Decoupling("vgg8b", (2, 4), (AuxSpec("downstream", 2, 0.5), AuxSpec("downstream", 1)),
                   (BlockOptim(),) * 3, width=0.25)
    t = d.transfer("vgg16")
    n_src, n_dst = get_backbone("vgg8b").num_units, get_backbone("vgg16").num_units
    for a, b, c_src, c_dst in zip(d.aux, t.aux, d.cuts, t.cuts):
        ratio = (n_dst - c_dst) / (n_src - c_src)
        assert b.depth == max(1, min(n_dst - c_dst, math.floor(a.depth * ratio + 0.5)))
        assert b.width == a.width and b.family == "downstream"
    assert t.aux[0].depth > d.aux[0].depth  # a deeper net: more units to copy
    build(t, 10, 1, 28)  # and it builds
    assert t.transfer("vgg8b").aux == d.aux  # and comes back


def test_pyramidal_depth_falls_to_the_coefficient() -> None:
    assert [pyramidal_depth(4, k, 5, 0.5) for k in range(4)] == [4, 3, 3, 2]
    assert [pyramidal_depth(4, k, 5, 0.0) for k in range(4)] == [4] * 4
    assert pyramidal_depth(1, 3, 5, 0.9) == 1


def test_infopro_decoder_rebuilds_the_input_shape_and_the_loss_is_finite() -> None:
    torch.manual_seed(0)
    dec = Decoder(24, 1, (28, 28))
    assert dec(torch.randn(3, 24, 7, 7)).shape == (3, 1, 28, 28)
    place = HeadPlace("vgg8b", 0.25, 2, block=0, num_blocks=3, in_channels=1,
                      image_size=(28, 28))
    head = make_aux_head("conv", channels=64, size=(14, 14), num_classes=10, loss="infopro",
                         place=place)
    x, y, image = torch.randn(4, 64, 14, 14), torch.tensor([0, 1, 2, 3]), torch.randn(4, 1, 28, 28)
    loss, logits = head.loss(x, y, image=image)
    assert torch.isfinite(loss) and logits.shape == (4, 10)
    loss.backward()
    assert all(p.grad is not None for p in head.decoder.parameters())  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="rebuilds the input image"):
        head.loss(x, y)
    with pytest.raises(ConfigError, match="infopro loss needs"):
        make_aux_head("conv", channels=64, size=(14, 14), num_classes=10, loss="infopro")


def test_infopro_weights_move_from_reconstruction_to_classification() -> None:
    assert infopro_weights(0, 4) == (1.0, 0.0)  # InfoPro's (6, 0): rebuilding only
    weights = [infopro_weights(k, 4) for k in range(3)]
    recon, ce = zip(*weights)
    assert list(recon) == sorted(recon, reverse=True) and list(ce) == sorted(ce)
    assert all(r + c == pytest.approx(1.0) for r, c in weights)
    # InfoPro's ratio at every block: (6, 0) -> (1, 2) linearly, the last block's if it had one
    assert infopro_weights(3, 4) == pytest.approx((1 / 3, 2 / 3))
    (r0, c0), (r1, c1) = INFOPRO_FIRST, INFOPRO_LAST
    r, c = r0 + (r1 - r0) / 3, c0 + (c1 - c0) / 3
    assert infopro_weights(1, 4) == pytest.approx((r / (r + c), c / (r + c)))


def test_infopro_loss_weighs_reconstruction_and_cross_entropy() -> None:
    torch.manual_seed(0)
    place = HeadPlace("vgg8b", 0.25, 2, block=1, num_blocks=3, in_channels=1,
                      image_size=(28, 28))
    head = make_aux_head("linear", channels=8, size=(7, 7), num_classes=3, loss="infopro",
                         place=place)
    x, y, image = torch.randn(4, 8, 7, 7), torch.tensor([0, 1, 2, 0]), torch.randn(4, 1, 28, 28)
    w_recon, w_ce = infopro_weights(1, 3)
    ce = nn.functional.cross_entropy(head.logits(x), y)
    recon = nn.functional.mse_loss(head.decoder(x), image)  # type: ignore[misc]
    assert head.loss(x, y, image=image)[0].item() == pytest.approx(
        (w_recon * recon + w_ce * ce).item(), rel=1e-5)
