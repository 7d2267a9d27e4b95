"""A seeded stand-in for an Optuna trial: random decouplings of a space without a study."""

from __future__ import annotations

import math
import random
from typing import Any, Sequence


class RandomTrial:
    """A seeded TrialLike that draws every parameter uniformly (log-uniformly where asked):
    random decouplings of a space without a study (benchmarks, property tests)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False
                      ) -> float:
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.rng.choice(list(choices))
