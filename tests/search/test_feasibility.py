"""One feasibility rule: a trial the placer calls feasible is never rejected by the objective.

Property test: random draws on vgg8b and ResNet-18, under both cost models, with the limits
placed right at another draw's own figures (where any rounding or second computation would
show), each placed and then judged by the objective's own verdict.
"""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
import torch

from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.trial.constraints import meets
from bwbpf.search.trial.objective import Objective
from bwbpf.search.trial.placement import Placer
from bwbpf.spaces import SearchSpace
from bwbpf.spaces.encoding import draw
from bwbpf.spaces.random_trial import RandomTrial
from bwbpf.trainers import Data
from bwbpf.trainers.timing import StepTimer

DRAWS = 17  # per limit set: 51 per backbone and cost model, 204 in all
SHAPE = {"in_channels": 3, "image_size": (16, 16), "num_classes": 10}  # the synthetic data's


@pytest.mark.parametrize("cost_model", ["flops", "measured"])
@pytest.mark.parametrize("backbone", [
    "vgg8b", pytest.param("resnet18", marks=pytest.mark.integration)])  # (ResNet: 20 s)
def test_a_trial_the_placer_calls_feasible_is_never_rejected(backbone: str, cost_model: str,
                                                             synthetic: Data) -> None:
    free = SearchSpace(backbones=(backbone,))
    timer = (StepTimer(torch.device("cpu"), 8, **SHAPE, repeats=1, warmup=0)  # type: ignore[arg-type]
             if cost_model == "measured" else None)
    figures = Placer(free, [], **SHAPE, timer=timer)  # type: ignore[arg-type]
    draws = [draw(RandomTrial(seed), free) for seed in range(DRAWS)]
    study = optuna.create_study()
    feasible = moved = limits = 0
    for source in draws:
        at = figures.ratios(source.decoupling())  # the limits sit on this draw's figures
        if at.memory_ratio > 1 or limits == 3:  # (a memory limit is a fraction of BP's)
            continue
        limits += 1
        space = replace(free, min_speedup=at.speedup, max_memory=at.memory_ratio)
        settings = SearchSettings(study="p", storage="sqlite://", space=space,
                                  cost_model=cost_model,  # type: ignore[arg-type]
                                  device="cpu", epochs=1, quiet=True)
        objective = Objective(settings, synthetic, placer=figures.under(space))
        # the draw the limits were taken from meets them exactly, and is accepted as drawn
        assert objective.placer.place(source) == (source.decoupling(), False)
        assert objective.verdict(study.ask(), source.decoupling()) is None
        for drawn in draws:
            d, _ = objective.placer.place(drawn)
            moved += d != drawn.decoupling()
            if meets(objective.constraints, objective.placer.ratios(d)):
                feasible += 1
                assert objective.verdict(study.ask(), d) is None, (d, at)
            else:  # left as drawn, to be rejected: then the objective says why
                assert d == drawn.decoupling()
                assert objective.verdict(study.ask(), d)
    # the property is exercised: three limit sets, many draws moved, most ended feasible
    assert limits == 3 and moved >= DRAWS // 2 and feasible >= DRAWS, (limits, moved, feasible)
