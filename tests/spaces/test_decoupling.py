from __future__ import annotations

import pytest

from bwbpf.spaces import AuxSpec, BlockOptim, ConfigError, Decoupling, balanced_cuts

OPT = BlockOptim()


def make(**kw: object) -> Decoupling:
    args: dict = dict(backbone="vgg11", cuts=(2, 5), aux=(AuxSpec(),) * 2, optim=(OPT,) * 3)
    args.update(kw)
    return Decoupling(**args)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"backbone": "vgg99"}, r"unknown backbone 'vgg99'; valid: vgg8b, vgg11"),
        ({"cuts": (0, 5)}, r"cuts\[0\]: 0 out of range; vgg11 has 8 units, valid cuts are 1\.\.7"),
        ({"cuts": (2, 8)}, r"cuts\[1\]: 8 out of range.*1\.\.7"),
        ({"cuts": (5, 2)}, r"cuts\[1\]: 2 must be greater than cuts\[0\]=5"),
        ({"cuts": (2, 2)}, r"cuts\[1\]: .*no empty block"),
        ({"cuts": (2, "5")}, r"cuts\[1\]: expected an integer"),
        ({"cuts": (2, True)}, r"cuts\[1\]: expected an integer"),
        ({"aux": (AuxSpec(),)}, r"aux: 1 aux heads for 3 blocks"),
        ({"optim": (OPT,) * 2}, r"optim: 2 optimiser settings for 3 blocks"),
        ({"width": -0.5}, r"width: -0\.5 not in \(0, 16\.0\]"),
        ({"width": float("nan")}, r"width: nan"),
    ],
)
def test_each_bad_field_has_its_own_error(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        make(**kwargs)


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: AuxSpec("conv", depth=4), r"depth: 4 not in 1\.\.3 for the conv head"),
        (lambda: AuxSpec("ir", depth=0), r"depth: 0 not in 1\.\.4"),
        (lambda: AuxSpec("linear", width=2.0), r"width: the linear head has no width knob"),
        (lambda: AuxSpec("conv", width=0), r"width: 0 not in"),
        (lambda: AuxSpec("conv", loss="mse"), r"loss: unknown local loss 'mse'; valid: pred"),
        (lambda: BlockOptim(lr=0), r"lr: 0 not in \(0, 10\]"),
        (lambda: BlockOptim(lr=1e9), r"lr: 1000000000.0 not in"),
        (lambda: BlockOptim(weight_decay=-1), r"weight_decay: -1 not in"),
        (lambda: BlockOptim(optimizer="lion"), r"optimizer: 'lion' not one of"),
        (lambda: BlockOptim(momentum=1.0), r"momentum: 1.0 not in \[0, 1\)"),
    ],
)
def test_aux_and_optimiser_fields_are_checked(build, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build()


def test_dict_round_trip_and_paths_in_errors() -> None:
    d = make(aux=(AuxSpec("conv", 2, 0.5, "predsim"), AuxSpec("ir", 3, 1.5)),
             optim=(BlockOptim(lr=0.1), BlockOptim(optimizer="adamw", lr=1e-3), OPT), width=0.25)
    assert Decoupling.from_dict(d.to_dict()) == d
    raw = d.to_dict()
    raw["aux"][1]["depth"] = 9
    with pytest.raises(ConfigError, match=r"^\$\.aux\[1\]\.depth: 9 not in 1\.\.4"):
        Decoupling.from_dict(raw)
    raw = d.to_dict()
    del raw["cuts"]
    with pytest.raises(ConfigError, match=r"^\$\.cuts: missing required field"):
        Decoupling.from_dict(raw)
    raw = d.to_dict() | {"colour": "red"}
    with pytest.raises(ConfigError, match=r"^\$\.colour: unknown field"):
        Decoupling.from_dict(raw)
    raw = d.to_dict()
    raw["cuts"] = [2, 99]
    with pytest.raises(ConfigError, match=r"^\$\.cuts\[1\]: 99 out of range"):
        Decoupling.from_dict(raw)


def test_uniform_and_end_to_end() -> None:
    u = Decoupling.uniform("resnet18", k=3)
    sizes = [b - a for a, b in u.block_ranges()]
    assert sum(sizes) == 9 and max(sizes) - min(sizes) <= 1
    e = Decoupling.end_to_end("resnet18")
    assert e.num_blocks == 1 and e.aux == () and e.block_ranges() == [(0, 9)]
    with pytest.raises(ConfigError, match=r"k: 10 blocks not in 1\.\.9"):
        Decoupling.uniform("resnet18", k=10)


def test_balanced_cuts_minimise_the_largest_block() -> None:
    costs = [5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0]
    cuts = balanced_cuts(costs, 3)
    edges = [0, *cuts, len(costs)]
    worst = max(sum(costs[a:b]) for a, b in zip(edges, edges[1:]))
    assert worst == 5.0  # [5] [1 1 1 1 1] [4]: no split can beat the largest single unit
    assert balanced_cuts([1.0] * 8, 4) == (2, 4, 6)
    with pytest.raises(ConfigError):
        balanced_cuts([1.0, 2.0], 3)
