from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from bwbpf.spaces import (
    AuxSpec,
    BlockOptim,
    ConfigError,
    Decoupling,
    SearchSpace,
    get_backbone,
    params_for,
    reference_decouplings,
    sample,
)
from bwbpf.spaces.copied_heads import pyramidal_depth
from bwbpf.spaces.encoding import cuts_from_fractions
from bwbpf.spaces.heads import AUX_HEADS

SPACES = [SearchSpace(), SearchSpace(backbones=("resnet18", "vgg11"), max_blocks=5, min_units=1),
          SearchSpace(backbones=("resnet50",), max_blocks=3, min_units=3,
                      heads=("conv", "ir"), losses=("pred",)),
          SearchSpace(backbones=("resnet18",), max_blocks=4, heads=("downstream",),
                      losses=("infopro", "pred"), pyramid=0.5)]


@pytest.mark.parametrize("space", SPACES, ids=["default", "two-backbones", "resnet50",
                                               "downstream-pyramid"])
def test_every_sample_validates_and_replays(space: SearchSpace) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        d = sample(trial, space)  # Decoupling validates on construction
        sizes = [b - a for a, b in d.block_ranges()]
        assert min(sizes) >= space.min_units
        assert space.min_blocks <= d.num_blocks <= space.max_blocks
        assert all(a.family in space.heads and a.loss in space.losses for a in d.aux)
        assert sample(optuna.trial.FixedTrial(trial.params), space) == d
        for k, a in enumerate(d.aux):
            after = get_backbone(d.backbone).num_units - d.cuts[k]
            assert a.family != "downstream" or a.depth <= after
            knobs = AUX_HEADS.get(a.family).has_width
            assert a.min_channels == (space.head_min_channels if knobs else 0)
            if space.pyramid and a.family == "downstream":  # depth falls from aux_0_depth
                top = trial.params["aux_0_depth"]
                assert a.depth == min(after, pyramidal_depth(top, k, d.num_blocks, 0.5))
        study.tell(trial, 0.5)


def test_parameter_names_are_the_same_for_every_trial() -> None:
    # Fixed-dimensional: whatever K a trial draws, it suggests the same parameters.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    names = set()
    for _ in range(20):
        t = study.ask()
        sample(t, SearchSpace())
        names.add(tuple(sorted(t.params)))
        study.tell(t, 0.0)
    assert len(names) == 1
    assert {"n_blocks", "cut_1", "cut_3", "aux_2_head", "lr_mult_3", "weight_decay"} <= set(
        next(iter(names)))


def independently_sampled(sampler: optuna.samplers.BaseSampler, draw) -> set[str]:
    """Parameters the sampler's joint (relative) model leaves out, after a few trials: those
    are the ones it samples independently (Optuna 5's TPE does so silently)."""
    study = optuna.create_study(sampler=sampler, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i in range(8):
            t = study.ask()
            study.tell(t, draw(t) + (i % 3) * 0.01)
        t = study.ask()
        joint = sampler.infer_relative_search_space(study, study.get_trials()[-1])
        draw(t)
    return set(t.params) - set(joint)


@pytest.mark.integration  # fits the GP sampler's model
@pytest.mark.parametrize("make", [
    lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
    lambda: optuna.samplers.GPSampler(seed=0, n_startup_trials=3),
    lambda: optuna.samplers.NSGAIISampler(seed=0, population_size=4),
], ids=["tpe", "gp", "nsga2"])
def test_samplers_model_every_parameter_jointly(make) -> None:
    left_out = independently_sampled(make(), lambda t: sample(t, SearchSpace()).num_blocks / 10)
    assert left_out == set()


def test_the_check_catches_a_conditional_space() -> None:
    # A K-dependent (conditional) encoding, as the fixed-dimensional one avoids.
    def conditional(t: optuna.Trial) -> float:
        k = t.suggest_int("k", 2, 4)
        return sum(t.suggest_float(f"cut_of_{k}_{i}", 0, 1) for i in range(k - 1))

    left_out = independently_sampled(optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
                                     conditional)
    assert left_out and all(name.startswith("cut_of_") for name in left_out)


def test_no_sampler_warning_on_the_space(caplog) -> None:
    optuna.logging.enable_propagation()
    try:
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="optuna"):
            warnings.simplefilter("error")
            study = optuna.create_study(sampler=optuna.samplers.TPESampler(
                seed=0, n_startup_trials=3), direction="maximize")
            study.optimize(lambda t: sample(t, SearchSpace()).num_blocks / 10, n_trials=8)
    finally:
        optuna.logging.disable_propagation()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cuts_from_fractions_cover_the_range() -> None:
    assert cuts_from_fractions([0.0, 0.0, 0.0], 10, 1) == (1, 2, 3)
    assert cuts_from_fractions([1.0, 1.0, 1.0], 10, 1) == (7, 8, 9)
    assert cuts_from_fractions([1.0, 1.0], 10, 3) == (4, 7)  # min_units of 3 in every block
    assert cuts_from_fractions([0.5], 9, 1) == (5,)


def test_reference_decouplings_are_in_the_space() -> None:
    space = SearchSpace()
    refs = reference_decouplings(space)
    assert refs["paper"] == Decoupling.paper_default("vgg8b", width=0.25,
                                                     optim=refs["paper"].optim[0])
    for d in refs.values():
        assert sample(optuna.trial.FixedTrial(params_for(d, space)), space) == d
    narrow = SearchSpace(heads=("conv",))
    with pytest.raises(ConfigError, match="not in the search space: aux\\[0\\] linear"):
        params_for(refs["paper"], narrow)


def test_params_for_knows_the_heads_the_space_draws() -> None:
    space = SearchSpace(backbones=("resnet18",), heads=("downstream", "conv"), pyramid=0.5)
    optim = (BlockOptim(),) * 4
    ok = Decoupling("resnet18", (2, 4, 6), (AuxSpec("downstream", 4, 1.0, min_channels=32),
                                           AuxSpec("downstream", 3, 1.0, min_channels=32),
                                           AuxSpec("downstream", 2, 1.0, min_channels=32)),
                    optim, 0.25)
    assert sample(optuna.trial.FixedTrial(params_for(ok, space)), space) == ok
    flat = replace(ok, aux=(ok.aux[0], ok.aux[0], ok.aux[2]))  # not the pyramid the space draws
    with pytest.raises(ConfigError, match=r"aux\[1\] downstream depth 4, .*draws depth 3"):
        params_for(flat, space)
    thin = replace(ok, aux=(AuxSpec("conv", 1, 1.0),) * 3)  # no channel floor
    with pytest.raises(ConfigError, match=r"aux\[0\] conv depth 1, 0 channels at least"):
        params_for(thin, space)


@pytest.mark.parametrize(("weight_decay", "middle"), [
    ((1e-5, 1e-3), 5e-4),  # the usual value, when the space allows it
    ((1e-3, 4e-3), 2e-3),  # else the geometric middle of the range
    ((1e-6, 1e-4), 1e-5),
])
def test_baselines_use_the_middle_weight_decay(weight_decay: tuple[float, float],
                                               middle: float) -> None:
    space = SearchSpace(weight_decay=weight_decay)
    assert space.middle_weight_decay == pytest.approx(middle)
    for d in reference_decouplings(space).values():
        assert {o.weight_decay for o in d.optim} == {space.middle_weight_decay}


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"max_blocks": 7}, r"space.max_blocks: 7 blocks .* vgg8b has 6 units, so at most 6"),
    ({"min_blocks": 5, "max_blocks": 4}, r"space.min_blocks"),
    ({"heads": ("conv", "mlp")}, r"unknown aux head 'mlp'"),
    ({"lr": (0.1, 0.01)}, r"space.lr: range"),
    ({"losses": ("sim",)}, r"space.losses: unknown local loss 'sim'"),
    ({"backbones": ("vgg99",)}, r"unknown backbone 'vgg99'"),
    ({"pyramid": 1.0}, r"space.pyramid: 1.0 must be in \[0, 1\)"),
    ({"head_min_channels": -1}, r"min_channels: -1 not an integer in 0..4096"),
    ({"augment": "yes"}, r"space.augment: 'yes' must be true or false"),
])
def test_bad_spaces_are_refused(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        SearchSpace(**kwargs)


def test_space_files(tmp_path: Path) -> None:
    y = tmp_path / "space.yaml"
    y.write_text("backbones: [resnet18]\nmax_blocks: 3\nheads: [conv, ir]\nlr: [0.01, 0.1]\n")
    s = SearchSpace.from_file(y)
    assert s.backbones == ("resnet18",) and s.max_blocks == 3 and s.lr == (0.01, 0.1)
    j = tmp_path / "space.json"
    j.write_text('{"heads": ["linear"], "colour": 1}')
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        SearchSpace.from_file(j)
    j.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        SearchSpace.from_file(j)
