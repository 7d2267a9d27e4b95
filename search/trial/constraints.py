"""Constraints on what a trial costs: ``--min-speedup S`` and ``--max-memory R``.

Both costs (trainers.NetCost: speed-up over end-to-end BP, peak saved activations as a
fraction of BP's) are known before training, so:

- every trial of a constrained study gets Optuna constraint values (``set_constraint``; > 0
  broken, <= 0 met), met ones included, so the sampler sees both sides of the boundary. TPE
  learns from rejected (PRUNED) trials too; GP and NSGA-II read constraints of COMPLETE trials
  only, so for them a rejected sample teaches nothing (it still costs no training);
- a sampled trial that breaks one is *rejected*: recorded (``TrialRecord.rejected``), ended
  PRUNED, never trained, and it uses no budget (search.study.budget). A baseline is trained anyway
  and marked (``TrialRecord.infeasible``); best, export and summaries choose among feasible
  trials;
- before a study starts, a constraint that no decoupling of the space can meet is refused
  (``check_reachable``);
- ``RejectionGuard`` ends a run whose sampler keeps proposing infeasible samples anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import optuna

from bwbpf.reports.record import TrialRecord
from bwbpf.search.trial.reach import Pieces, Profile, best_speedup, least_memory, profile
from bwbpf.spaces import SearchSpace, UserError
from bwbpf.trainers.cost import Ratios
from bwbpf.trainers.timing import StepTimer

Name = Literal["min_speedup", "max_memory"]
NAMES: tuple[Name, ...] = ("min_speedup", "max_memory")
MAX_REJECTED_IN_A_ROW = 200  # samples; then the run stops (RejectionGuard)


def _pair(value: float, limit: float) -> tuple[str, str]:
    """Both numbers at 2 decimals, or more (up to 9) where 2 would print them equal."""
    for digits in (2, 4, 6, 9):
        a, b = f"{value:.{digits}f}", f"{limit:.{digits}f}"
        if a != b:
            break
    return a, b


@dataclass(frozen=True)
class Constraint:
    name: Name
    limit: float

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def figure(self, speedup: float, memory: float) -> float:
        """The cost this constraint limits."""
        return speedup if self.name == "min_speedup" else memory

    def value(self, speedup: float, memory: float) -> float:
        """Optuna's constraint value: > 0 broken, <= 0 met."""
        if self.name == "min_speedup":
            return self.limit - speedup
        return memory - self.limit

    def reason(self, speedup: float, memory: float) -> str:
        """Why it is broken, e.g. "speed-up 1.21x < 2.00x"."""
        v, lim = _pair(self.figure(speedup, memory), self.limit)
        if self.name == "min_speedup":
            return f"speed-up {v}x < {lim}x"
        return f"memory {v} of BP's > {lim}"

    def shown(self, figure: float) -> str:
        return f"{figure:.2f}x" if self.name == "min_speedup" else f"{figure:.2f} of BP's"


def of_space(space: SearchSpace) -> list[Constraint]:
    return [Constraint(n, float(v)) for n in NAMES if (v := getattr(space, n)) is not None]


def broken(constraints: Sequence[Constraint], r: Ratios) -> list[str]:
    """The one feasibility rule: why a decoupling with these figures breaks the constraints
    (empty when it meets them). Judged on the unrounded figures, by the placer
    (search.trial.placement), the objective, the warm start and transfer alike, so a
    decoupling the placer calls feasible is never rejected; records show the figures
    rounded."""
    return [c.reason(r.speedup, r.memory_ratio) for c in constraints
            if c.value(r.speedup, r.memory_ratio) > 0]


def meets(constraints: Sequence[Constraint], r: Ratios) -> bool:
    return not broken(constraints, r)


def judge(trial: optuna.Trial, constraints: Sequence[Constraint], r: Ratios) -> str | None:
    """Sets every constraint's value on ``trial``; the reasons of the broken ones, or None."""
    have = trial.constraints  # a re-queued trial keeps its predecessor's: same parameters
    for c in constraints:
        if c.name not in have:
            trial.set_constraint(c.name, c.value(r.speedup, r.memory_ratio))
    return "; ".join(broken(constraints, r)) or None


# ---------------------------------------------------------------- what the space can reach
def check_reachable(space: SearchSpace, *, in_channels: int, image_size: tuple[int, int],
                    num_classes: int, timer: StepTimer | None = None) -> None:
    """Refuses a constraint that no decoupling of the space meets, naming the best value the
    space reaches; the speed-up from ``timer``'s measured step times when given (what the
    trials are judged on), else from FLOPs.

    The values come from per-unit costs and the cheapest head at each cut, measured once each
    (search.trial.reach), by the rules measure_cost and the timer follow; the objective still
    judges each trial on measure_cost's and the timer's own figures.
    """
    if space.min_speedup is None and space.max_memory is None:
        return
    reach = _Reach(space, {"in_channels": in_channels, "image_size": image_size,
                           "num_classes": num_classes})
    profiles = reach.profiles(timer)
    if space.min_speedup is not None:
        if reach.top_speedup(profiles)[0] < space.min_speedup and timer is not None:
            timer.time_again()  # a busy moment may have slowed some pieces: the fastest of two
            profiles = reach.profiles(timer)
        reach.check_speedup(profiles, timer)
    if space.max_memory is not None:
        reach.check_memory(profiles)


@dataclass(frozen=True)
class _Reach:
    """What the space can reach, on one input shape."""

    space: SearchSpace
    shape: dict[str, Any]

    def profiles(self, timer: StepTimer | None) -> list[Profile]:
        return [profile(Pieces(b, self.space.width, timer=timer, **self.shape), self.space)
                for b in self.space.backbones]

    def where(self, backbone: str) -> str:
        sp = self.space
        units = f", >= {sp.min_units} units a block" if sp.min_units > 1 else ""
        return f"({backbone} x{sp.width:g}, K<={sp.max_blocks}{units})"

    def top_speedup(self, profiles: list[Profile]) -> tuple[float, str]:
        return max((best_speedup(p, self.space), p.backbone) for p in profiles)

    def check_speedup(self, profiles: list[Profile], timer: StepTimer | None) -> None:
        s = self.space.min_speedup
        assert s is not None
        top, b = self.top_speedup(profiles)
        if top < s:
            raise UserError(f"--min-speedup {s:g}: the space reaches at most "
                            f"{_pair(top, s)[0]}x {self.where(b)}{self.by_flops(s, timer)}")

    def by_flops(self, s: float, timer: StepTimer | None) -> str:
        """Where measured step times refuse a speed-up that FLOPs allow, the refusal says so:
        the times depend on this machine and what else runs on it."""
        if timer is None or (flops := self.top_speedup(self.profiles(None))[0]) < s:
            return ""
        return (f" by measured step times on this machine (by FLOPs it reaches {flops:.2f}x; "
                "times are slower while other work runs: rerun when the machine is idle, or "
                "pass --cost-model flops)")

    def check_memory(self, profiles: list[Profile]) -> None:
        s, r = self.space.min_speedup, self.space.max_memory
        assert r is not None
        low, b = min((least_memory(p, self.space), p.backbone) for p in profiles)
        if low > r:
            raise UserError(f"--max-memory {r:g}: the space needs at least "
                            f"{_pair(low, r)[0]} of BP's activation memory {self.where(b)}")
        if s is not None:
            low, b = min((least_memory(p, self.space, s), p.backbone) for p in profiles)
            if low > r:
                raise UserError(f"--min-speedup {s:g} with --max-memory {r:g}: no decoupling "
                                f"of the space meets both; at {s:g}x or more it needs at least "
                                f"{_pair(low, r)[0]} of BP's activation memory "
                                f"{self.where(b)}")


# ---------------------------------------------------------------- a run that only rejects
class TooManyRejected(UserError):
    """The sampler keeps proposing samples that break the constraints."""


class RejectionGuard:
    """An Optuna callback: after ``limit`` rejected samples in a row, ends the run in one line
    that names the broken constraints and the best value seen."""

    def __init__(self, constraints: Sequence[Constraint], limit: int | None = None) -> None:
        self.constraints = list(constraints)
        self.limit = limit or MAX_REJECTED_IN_A_ROW
        self.streak: list[tuple[float, float]] = []  # (speed-up, memory) of each rejected

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rec = TrialRecord.of(trial)
        if rec.rejected is None or rec.speedup is None or rec.memory_ratio is None:
            self.streak.clear()
            return
        self.streak.append((rec.speedup, rec.memory_ratio))
        if len(self.streak) >= self.limit:
            raise TooManyRejected(self.message())

    def message(self) -> str:
        parts = []
        for c in self.constraints:
            if any(c.value(s, m) > 0 for s, m in self.streak):
                seen = [c.figure(s, m) for s, m in self.streak]
                best = max(seen) if c.name == "min_speedup" else min(seen)
                parts.append(f"{c.flag} {c.limit:g} (the best seen: {c.shown(best)})")
        return (f"{len(self.streak)} samples in a row were rejected by {' and '.join(parts)}; "
                "relax the constraint or narrow the space (what is stored is kept)")
