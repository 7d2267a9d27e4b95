from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bwbpf.spaces import list_aux_heads, make_aux_head
from bwbpf.spaces.heads import AUX_HEADS, AuxHead
from bwbpf.spaces.losses import PREDSIM_BETA, SimProjection, similarity


# Heads that copy backbone units need their place in a net: tests/spaces/test_downstream.py.
@pytest.mark.parametrize("family", [f for f in list_aux_heads()
                                    if not AUX_HEADS.get(f).needs_place])
@pytest.mark.parametrize("size", [(1, 1), (3, 3), (8, 8), (7, 5)])
def test_every_head_and_depth_gives_logits(family: str, size: tuple[int, int]) -> None:
    lo, hi = AUX_HEADS.get(family).depths
    for depth in range(lo, hi + 1):
        width = 0.5 if AUX_HEADS.get(family).has_width else 1.0
        head = make_aux_head(family, channels=8, size=size, num_classes=5, width=width,
                             depth=depth)
        x = torch.randn(3, 8, *size)
        loss, logits = head.loss(x, torch.tensor([0, 1, 4]))
        assert logits.shape == (3, 5)
        loss.backward()
        assert all(p.grad is not None for p in head.parameters())


def test_deeper_heads_have_more_parameters() -> None:
    for family in ("conv", "mlp_sr", "ir"):
        lo, hi = AUX_HEADS.get(family).depths
        sizes = [sum(p.numel() for p in make_aux_head(family, channels=16, size=(8, 8),
                                                      num_classes=10, depth=d).parameters())
                 for d in range(lo, hi + 1)]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_similarity_of_one_hot_labels_is_same_class_structure() -> None:
    y = torch.tensor([0, 1, 0, 2])
    s = similarity(F.one_hot(y, 3))
    assert s.shape == (4, 4)
    assert s[0, 2] == pytest.approx(1.0) and s[0, 1] < 0 and s[1, 3] < 0


def test_predsim_mixes_pred_and_sim() -> None:
    torch.manual_seed(0)
    pred = make_aux_head("linear", channels=8, size=(4, 4), num_classes=3)
    both = make_aux_head("linear", channels=8, size=(4, 4), num_classes=3, loss="predsim")
    both.logits.load_state_dict(pred.logits.state_dict())
    x, y = torch.randn(6, 8, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    lp, logits_p = pred.loss(x, y)
    ls, logits_s = both.loss(x, y)
    assert torch.equal(logits_p, logits_s)
    assert both.sim is not None and pred.sim is None
    sim = F.mse_loss(similarity(both.sim(x)), similarity(F.one_hot(y, 3)))
    assert ls.item() == pytest.approx(0.01 * lp.item() + 0.99 * sim.item(), rel=1e-5)


def test_an_aux_head_is_its_logits_and_optional_sim_branch() -> None:
    # The sim branch alone decides the loss: there is no second "loss kind" to disagree with it.
    torch.manual_seed(0)
    logits = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 3))
    x, y = torch.randn(6, 8, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    ce = F.cross_entropy(logits(x), y)
    assert AuxHead(logits).loss(x, y)[0].item() == pytest.approx(ce.item())
    sim = SimProjection(8, (4, 4))
    mse = F.mse_loss(similarity(sim(x)), similarity(F.one_hot(y, 3)))
    both = AuxHead(logits, sim).loss(x, y)[0]
    assert both.item() == pytest.approx(((1 - PREDSIM_BETA) * ce + PREDSIM_BETA * mse).item())


def test_pool_linear_keeps_where_a_feature_is_and_linear_does_not() -> None:
    # Two maps with the same channel means but the feature in opposite corners: global pooling
    # (linear) cannot tell them apart, PredSim's pooled grid can.
    torch.manual_seed(0)
    a = torch.zeros(1, 4, 8, 8)
    a[:, :, :4, :4] = 1.0
    b = torch.zeros(1, 4, 8, 8)
    b[:, :, 4:, 4:] = 1.0
    x = torch.cat([a, b])
    linear = make_aux_head("linear", channels=4, size=(8, 8), num_classes=3)
    pooled = make_aux_head("pool_linear", channels=4, size=(8, 8), num_classes=3)
    assert torch.equal(linear(x)[0], linear(x)[1])
    assert not torch.allclose(pooled(x)[0], pooled(x)[1])


@pytest.mark.parametrize("channels, size, grid", [(32, (28, 28), (8, 8)), (64, (14, 14), (5, 5)),
                                                   (512, (4, 4), (2, 2)), (4096, (2, 2), (1, 1)),
                                                   (8, (3, 3), (3, 3)), (8, (3, 40), (3, 3))])
def test_pool_linear_pools_to_at_most_2048_features(channels: int, size: tuple[int, int],
                                                    grid: tuple[int, int]) -> None:
    head = make_aux_head("pool_linear", channels=channels, size=size, num_classes=10)
    fc = head.logits[-1]
    assert fc.in_features == channels * grid[0] * grid[1] <= max(2048, channels)
    assert head(torch.randn(2, channels, *size)).shape == (2, 10)
