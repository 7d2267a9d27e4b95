from __future__ import annotations

import pytest

from bwbpf.spaces import (
    AuxSpec,
    BlockOptim,
    Decoupling,
    HeadPlace,
    balanced_cuts,
    build,
    get_backbone,
)
from bwbpf.trainers import measure_cost, unit_costs
from bwbpf.trainers.cost import head_cost, unit_probes


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


@pytest.mark.parametrize("aux", [AuxSpec("downstream", 2, 0.5, "infopro", 16),
                                 AuxSpec("conv", 1, 1.0, "infopro"),
                                 AuxSpec("downstream", 2, 1.0)])
def test_block_costs_include_decoders_and_copied_units(aux: AuxSpec) -> None:
    # A block's training FLOPs are its units' and its head's, the head's decoder (infopro) and
    # copies of later units (downstream) included, and they are more than a linear head's.
    d = Decoupling("vgg8b", (2, 4), (aux, aux), (BlockOptim(),) * 3, 0.25)
    size = (28, 28)
    cost = measure_cost(build(d, 10, 1, size), 1, size)
    plain = measure_cost(build(Decoupling("vgg8b", (2, 4), (AuxSpec(),) * 2, (BlockOptim(),) * 3,
                                          0.25), 10, 1, size), 1, size)
    units = [f for f, _ in unit_probes("vgg8b", width=0.25, in_channels=1, image_size=size)]
    infos = get_backbone("vgg8b").describe(width=0.25, in_channels=1, image_size=size)
    for k, ((a, c), cut) in enumerate(zip(d.block_ranges(), d.cuts)):
        place = HeadPlace("vgg8b", 0.25, cut - 1, k, 3, 1, size)
        head, _ = head_cost(aux.family, depth=aux.depth, width=aux.width, loss=aux.loss,
                            on=infos[cut - 1], num_classes=10, min_channels=aux.min_channels,
                            place=place)
        assert cost.block_flops[k] == sum(units[a:c]) + head
        assert cost.block_flops[k] > plain.block_flops[k]
        assert cost.block_saved_bytes[k] > plain.block_saved_bytes[k]
    assert cost.backprop_flops == plain.backprop_flops  # BP has no aux heads
