"""The ``--sampler`` and ``--pruner`` choices, as Optuna objects."""

from __future__ import annotations

from typing import Literal

import optuna

from bwbpf.search.study.workers import TrialSeeded

Sampler = Literal["tpe", "random", "nsga2", "gp"]
Pruner = Literal["hyperband", "sha", "median", "none"]


def make_sampler(name: Sampler, *, seed: int | None, n_trials: int
                 ) -> optuna.samplers.BaseSampler:
    """The ``--sampler``, for any number of objectives; trial n draws from a stream seeded by
    (seed, n), so workers sharing a study and a seed never repeat each other's trials."""
    return TrialSeeded(lambda trial_seed: _sampler(name, seed=trial_seed, n_trials=n_trials),
                       seed)


def _sampler(name: Sampler, *, seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    startup = min(10, max(4, n_trials // 4))  # random trials before the model takes over
    if name == "tpe":
        # Every option set, as Optuna's defaults moved between versions and depend on the
        # number of objectives (5.0: independent TPE for several). multivariate: one joint
        # model of all parameters, for one objective or several; the space is fixed-
        # dimensional (spaces/encoding.py), so no conditional groups to split off (group).
        # constant_liar: other workers' running trials count as bad, so workers spread out.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                          multivariate=True, group=False, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":  # models all parameters jointly, for one objective or several
        population = max(4, min(50, n_trials // 3))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    # Joint; logEI for one objective, logEHVI for several. Accuracy is noisy (data order,
    # GPU kernels), so the GP models noise.
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup,
                                     deterministic_objective=False)


def make_pruner(name: Pruner, *, epochs: int, min_epochs: int, reduction_factor: int,
                startup_trials: int) -> optuna.pruners.BasePruner:
    """Resource = epochs. (Multi-objective studies prune with search.study.pruning instead.)"""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=epochs,
                                              reduction_factor=reduction_factor)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs,
                                                      reduction_factor=reduction_factor)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                           n_warmup_steps=min_epochs - 1)
    return optuna.pruners.NopPruner()
