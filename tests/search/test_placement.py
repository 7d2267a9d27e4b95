"""Samples feasible by construction (search.trial.placement) and tied heads (heads_tied)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from bwbpf.reports.record import TrialRecord
from bwbpf.search.trial.constraints import Constraint, meets, of_space
from bwbpf.search.trial.placement import Placer, ViableHeads
from bwbpf.search.trial.reach import cut_sets
from bwbpf.spaces import SearchSpace, build, params_for, sample
from bwbpf.spaces.encoding import Draw, draw, unused_params
from bwbpf.spaces.random_trial import RandomTrial
from bwbpf.trainers import measure_cost

from .conftest import FAST, Runner

SHAPE = {"in_channels": 3, "image_size": (16, 16), "num_classes": 10}
DEMO = {"min_speedup": 2.0, "max_memory": 0.6}  # the demo's constraints


def measured_ok(d: Any, rules: list[Constraint]) -> bool:
    c = measure_cost(build(d, 10, 3, 16), 3, (16, 16))
    return all(r.value(round(c.speedup, 4), round(c.memory_ratio, 4)) <= 0 for r in rules)


@pytest.mark.integration  # builds and counts every placed net whole
@pytest.mark.parametrize("backbone", ["vgg8b", "resnet18"])
def test_a_placed_draw_meets_the_constraints_by_measure_cost(backbone: str) -> None:
    space = SearchSpace(backbones=(backbone,), **DEMO)
    rules = of_space(space)
    placer = Placer(space, rules, **SHAPE)  # type: ignore[arg-type]
    p = placer.pieces(backbone)
    measured: dict[Any, bool] = {}  # each net built and counted once

    def ok_of(x: Any) -> bool:
        if x not in measured:
            measured[x] = measured_ok(x, rules)
        return measured[x]

    drawn_ok = placed_ok = moved = 0
    for seed in range(60):
        drawn = draw(RandomTrial(seed), space)
        d, lighter = placer.place(drawn)
        ok = ok_of(d)
        drawn_ok += ok_of(drawn.decoupling())
        placed_ok += ok
        if d != drawn.decoupling():
            moved += 1
            assert ok  # a moved draw is never infeasible
            # only the cuts (and with K, the blocks' count) move; the heads are the draw's,
            # or the draw's made lighter
            light = drawn.lighter(keep_loss=True), drawn.lighter(keep_loss=False)
            assert d in ([drawn.decoupling(d.cuts)] if not lighter
                         else [x.decoupling(d.cuts) for x in light])
        else:
            # not moved: it was feasible already, or no cut set of any K is for its head
            # families, even at their lightest
            if not ok:  # (the programme is measure_cost's figures: test_constraints)
                for x in (drawn.lighter(keep_loss=False).decoupling(c)
                          for k in range(2, 5) for c in cut_sets(p.units, k, 1)):
                    assert not meets(rules, p.of(x))
    # most random draws break the constraints; placed, nearly none do
    assert drawn_ok <= 30 and moved >= 20, (drawn_ok, moved)
    assert placed_ok >= 30, (drawn_ok, placed_ok)


@pytest.mark.integration  # builds and counts every placed net whole
def test_the_nearest_feasible_cut_set_is_chosen() -> None:
    space = SearchSpace(min_blocks=3, max_blocks=3, heads=("linear",), losses=("pred",),
                        **DEMO)
    rules = of_space(space)
    placer = Placer(space, rules, **SHAPE)  # type: ignore[arg-type]
    base = draw(RandomTrial(0), space)
    p = placer.pieces("vgg8b")
    for first in range(1, 5):
        for second in range(first + 1, 6):
            target = (first, second)
            drawn = Draw(**{**base.__dict__, "fractions": (0.0, 0.0)})
            got = placer._nearest(drawn, p, target)
            feasible = [c for c in ((a, b) for a in range(1, 5) for b in range(a + 1, 6))
                        if measured_ok(drawn.decoupling(c), rules)]
            assert got is not None and feasible
            least = min(abs(a - first) + abs(b - second) for a, b in feasible)
            assert got.cuts in feasible
            assert abs(got.cuts[0] - first) + abs(got.cuts[1] - second) == least


def test_without_constraints_or_as_drawn_nothing_moves() -> None:
    for space in (SearchSpace(), SearchSpace(cut_placement="as-drawn", **DEMO)):
        placer = Placer(space, of_space(space), **SHAPE)  # type: ignore[arg-type]
        for seed in range(5):
            drawn = draw(RandomTrial(seed), space)
            assert placer.place(drawn) == (drawn.decoupling(), False)


def test_tied_heads_give_every_block_one_design() -> None:
    tied = SearchSpace(heads_tied="tied", min_blocks=4)
    free = SearchSpace(heads_tied="free", min_blocks=4)
    differ = 0
    for seed in range(20):
        d = sample(RandomTrial(seed), tied)
        assert len({(a.family, a.width, a.loss) for a in d.aux}) == 1
        differ += len({a.family for a in sample(RandomTrial(seed), free).aux}) > 1
    assert differ >= 10
    # drawn per trial: both kinds occur, and the parameter says which
    space = SearchSpace(min_blocks=4)
    kinds = set()
    for seed in range(20):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        t = study.ask()
        d = sample(t, space)
        kinds.add(t.params["tied_heads"])
        if t.params["tied_heads"]:
            assert len({(a.family, a.loss) for a in d.aux}) == 1
            assert {"aux_1_head", "aux_2_loss"} <= set(unused_params(t.params, d.num_blocks))
    assert kinds == {False, True}


def test_a_tied_space_refuses_references_with_differing_heads() -> None:
    space = SearchSpace(heads_tied="tied")
    d = sample(RandomTrial(3), SearchSpace(heads_tied="free", min_blocks=4))
    if len(set(d.aux)) > 1:
        with pytest.raises(Exception, match="heads that differ"):
            params_for(d, space)


def test_a_random_study_at_the_demo_constraints_trains_its_budget(cli: Runner, db: str
                                                                  ) -> None:
    n = 6
    rc, out, err = cli("-q", "run", "--storage", db, "--study", "r", "--n-trials", str(n),
                       "--no-baselines", "--sampler", "random", "--pruner", "none",
                       "--min-speedup", "2", "--max-memory", "0.6", *FAST, "--epochs", "1",
                       "--train-subset", "128", "--val-size", "64",
                       # exact figures: step times on 16x16 images are mostly overhead, and
                       # move with what else the machine runs
                       "--cost-model", "flops")
    assert rc == 0, err
    trials = optuna.load_study(study_name="r", storage=db).get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    rejected = [t for t in trials if TrialRecord.of(t).rejected]
    assert len(done) == n
    assert len(rejected) <= 0.1 * len(trials)
    space = SearchSpace(**DEMO)
    for t in done:
        rec = TrialRecord.of(t)
        assert rec.speedup is not None and rec.memory_ratio is not None
        assert rec.speedup >= 2 and rec.memory_ratio <= 0.6
        # what the parameters drew, and what was trained: a move is recorded as such
        drawn = draw(optuna.trial.FixedTrial(t.params), space)
        d = rec.decoupling()
        assert d is not None
        if d.cuts != drawn.cuts or rec.lighter_heads:
            assert rec.drawn_cuts == drawn.cuts
        else:
            assert rec.drawn_cuts == () and d == drawn.decoupling()


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_the_sampler_proposes_only_heads_that_can_fit(kind: str) -> None:
    space = SearchSpace(**DEMO)
    placer = Placer(space, of_space(space), **SHAPE)  # type: ignore[arg-type]
    assert placer.left_out and set(placer.viable) | set(placer.left_out) == set(space.heads)
    base = (optuna.samplers.RandomSampler(seed=0) if kind == "random"
            else optuna.samplers.TPESampler(seed=0, n_startup_trials=3, multivariate=True))
    study = optuna.create_study(sampler=ViableHeads(base, placer.viable, seed=0),
                                direction="maximize")
    # a reference that holds a left-out family is enqueued as it is
    ref = {"aux_0_head": placer.left_out[0]}
    study.enqueue_trial(ref, skip_if_exists=False)
    for i in range(12):
        t = study.ask()
        d = sample(t, space)
        heads = {v for k, v in t.params.items() if k.endswith("_head")}
        if i == 0:
            assert t.params["aux_0_head"] == placer.left_out[0]
        else:
            assert heads <= set(placer.viable), heads
        study.tell(t, float(len(d.aux)))
