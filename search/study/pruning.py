"""Pruning multi-objective trials by their accuracy curve.

Optuna refuses ``trial.report`` in multi-objective studies, so its pruners cannot see them.
Every trial here records its validation-accuracy curve (``TrialRecord.curve``); this
pruner compares a trial's curve with the others' at the same epoch, by the same rules as
Optuna's SuccessiveHalvingPruner (also used for ``hyperband``: one bracket) or MedianPruner,
and the objective raises TrialPruned itself.
"""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import TrialState

from bwbpf.reports.record import TrialRecord
from bwbpf.search.study.samplers import Pruner


class CurvePruner:
    def __init__(self, rule: Pruner, *, min_epochs: int = 1, reduction_factor: int = 3,
                 startup_trials: int = 4) -> None:
        if min_epochs < 1 or reduction_factor < 2 or startup_trials < 0:
            raise ValueError(f"bad pruner settings: min_epochs={min_epochs}, "
                             f"reduction_factor={reduction_factor}, startup={startup_trials}")
        self.rule = "sha" if rule == "hyperband" else rule
        self.min_epochs, self.rf, self.startup = min_epochs, reduction_factor, startup_trials

    def is_rung(self, epoch: int) -> bool:
        """SHA rungs sit at min_epochs * rf**i epochs."""
        r = self.min_epochs
        while r < epoch:
            r *= self.rf
        return r == epoch

    def should_prune(self, study: optuna.Study, number: int, curve: list[float]) -> bool:
        epoch = len(curve)
        if self.rule == "none" or epoch < self.min_epochs:
            return False
        others = [(t.state, c) for t in study.get_trials(deepcopy=False)
                  if t.number != number and len(c := TrialRecord.of(t).curve) >= epoch]
        value = curve[-1]
        if self.rule == "median":
            done = [c[epoch - 1] for state, c in others if state == TrialState.COMPLETE]
            return len(done) >= max(1, self.startup) and value < statistics.median(done)
        if not self.is_rung(epoch):
            return False
        # Optuna's promotion rule: the top 1/rf of every trial that reached this rung goes
        # on; while fewer than rf trials are there, only the best so far does.
        values = sorted([c[epoch - 1] for _, c in others] + [value],
                        reverse=True)
        keep = max(0, len(values) // self.rf - 1)
        return value < values[keep]
