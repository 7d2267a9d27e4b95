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


def test_ideal_speedup_and_memory_of_a_decoupling() -> None:
    d = Decoupling.uniform("resnet18", k=4, width=0.25)
    cost = measure_cost(build(d, 10, 3, (32, 32)), 3, (32, 32))
    assert cost.ideal_speedup == pytest.approx(sum(cost.block_flops) / max(cost.block_flops))
    assert 1.0 < cost.ideal_speedup <= 4.0
    # BP keeps every unit's activations; BP-free only the live block's.
    assert cost.peak_saved_bytes < cost.backprop_saved_bytes
    assert sum(cost.block_flops) > cost.backprop_flops * 0.9  # heads add work, never remove it
    assert len(cost.block_params) == 4


def test_memory_balanced_cuts_cut_peak_memory() -> None:
    _, saved = unit_costs("resnet18", width=0.25, in_channels=3, image_size=(32, 32))
    ratios = []
    # memory-balanced K=4 against late cuts that leave the big early maps in one block
    for cuts in [balanced_cuts(saved, 4), (6, 7, 8)]:
        k = len(cuts) + 1
        d = Decoupling("resnet18", cuts, (AuxSpec(),) * (k - 1), (BlockOptim(),) * k, 0.25)
        ratios.append(measure_cost(build(d, 10, 3, 32), 3, (32, 32)).memory_ratio)
    assert ratios[0] < ratios[1]
