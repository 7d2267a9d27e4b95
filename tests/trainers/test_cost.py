from __future__ import annotations

import pytest

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, balanced_cuts, build
from bwbpf.trainers import measure_cost, unit_costs


def test_flops_follow_the_conv_formula() -> None:
    # vgg11 at width 0.125: unit 0 is a 3x3 conv 3 -> 8 channels at 16x16.
    flops, saved = unit_costs("vgg11", width=0.125, in_channels=3, image_size=(16, 16))
    forward = 2 * 3 * 8 * 9 * 16 * 16
    # backward of the first unit needs only the weight gradient (the input needs none): 2x fwd
    assert flops[0] == forward * 2
    assert all(f > 0 for f in flops) and all(s > 0 for s in saved)


def test_speedup_and_memory_of_a_decoupling_are_against_bp() -> None:
    d = Decoupling.uniform("resnet18", k=4, width=0.25)
    cost = measure_cost(build(d, 10, 3, (32, 32)), 3, (32, 32))
    assert cost.speedup == pytest.approx(cost.backprop_flops / max(cost.block_flops))
    assert 1.0 < cost.speedup < cost.block_parallelism <= 4.0  # linear heads cost a little
    assert cost.compute_overhead == pytest.approx(sum(cost.block_flops) / cost.backprop_flops)
    # BP keeps every unit's activations; BP-free only the live block's.
    assert cost.peak_saved_bytes < cost.backprop_saved_bytes
    assert sum(cost.block_flops) > cost.backprop_flops * 0.9  # heads add work, never remove it
    assert len(cost.block_params) == 4


def test_heavy_heads_lower_the_speedup_below_bp() -> None:
    # The same cuts (the paper's, K=4): linear heads against SEDONA's deepest, widest head.
    costs = {}
    for aux in (AuxSpec("linear"), AuxSpec("ir", depth=4, width=2.0)):
        d = Decoupling("vgg8b", (2, 4, 5), (aux,) * 3, (BlockOptim(),) * 4, 0.25)
        costs[aux.family] = measure_cost(build(d, 10, 1, 28), 1, (28, 28))
    linear, heavy = costs["linear"], costs["ir"]
    assert heavy.speedup < 1.0 < linear.speedup  # each heavy step costs more than BP's
    assert heavy.compute_overhead > 2 * linear.compute_overhead
    assert heavy.memory_ratio > 1.0 > linear.memory_ratio
    # the old sum/max figure hides it: it stays near K for both
    assert heavy.block_parallelism > 1.5 and linear.block_parallelism > 1.5


def test_memory_balanced_cuts_cut_peak_memory() -> None:
    _, saved = unit_costs("resnet18", width=0.25, in_channels=3, image_size=(32, 32))
    ratios = []
    # memory-balanced K=4 against late cuts that leave the big early maps in one block
    for cuts in [balanced_cuts(saved, 4), (6, 7, 8)]:
        k = len(cuts) + 1
        d = Decoupling("resnet18", cuts, (AuxSpec(),) * (k - 1), (BlockOptim(),) * k, 0.25)
        ratios.append(measure_cost(build(d, 10, 3, 32), 3, (32, 32)).memory_ratio)
    assert ratios[0] < ratios[1]
