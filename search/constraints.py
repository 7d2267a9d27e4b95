"""Constraints on what a trial costs: ``--min-speedup S`` and ``--max-memory R``.

Both costs (trainers.NetCost: speed-up over end-to-end BP, peak saved activations as a
fraction of BP's) are known before training, so:

- every trial of a constrained study gets Optuna constraint values (``set_constraint``; > 0
  broken, <= 0 met), met ones included, so the sampler sees both sides of the boundary. TPE
  learns from rejected (PRUNED) trials too; GP and NSGA-II read constraints of COMPLETE trials
  only, so for them a rejected sample teaches nothing (it still costs no training);
- a sampled trial that breaks one is *rejected*: recorded (``TrialRecord.rejected``), ended
  PRUNED, never trained, and it uses no budget (search.budget). A baseline is trained anyway
  and marked (``TrialRecord.infeasible``); best, export and summaries choose among feasible
  trials;
- before a study starts, a constraint that no decoupling of the space can meet is refused
  (``check_reachable``);
- ``RejectionGuard`` ends a run whose sampler keeps proposing infeasible samples anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, Sequence

import optuna

from bwbpf.reports.record import TrialRecord
from bwbpf.spaces import AuxSpec, HeadPlace, SearchSpace, UserError, get_backbone
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.losses import LocalLoss
from bwbpf.trainers.cost import Saved, classifier_cost, head_cost, unit_probes
from bwbpf.trainers.timing import StepTimer

Name = Literal["min_speedup", "max_memory"]
NAMES: tuple[Name, ...] = ("min_speedup", "max_memory")
MAX_REJECTED_IN_A_ROW = 200  # samples; then the run stops (RejectionGuard)


def _pair(value: float, limit: float) -> tuple[str, str]:
    """Both numbers at 2 decimals, or 4 where 2 would print them equal."""
    for digits in (2, 4):
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


def judge(trial: optuna.Trial, constraints: Sequence[Constraint], speedup: float,
          memory: float) -> str | None:
    """Sets every constraint's value on ``trial``; the reasons of the broken ones, or None."""
    have = trial.constraints  # a re-queued trial keeps its predecessor's: same parameters
    for c in constraints:
        if c.name not in have:
            trial.set_constraint(c.name, c.value(speedup, memory))
    broken = [c.reason(speedup, memory) for c in constraints if c.value(speedup, memory) > 0]
    return "; ".join(broken) or None


# ---------------------------------------------------------------- what the space can reach
class Profile(NamedTuple):
    """One backbone's costs, for every block a cut set can make: ``step[a][c]`` (measured
    seconds, or FLOPs per image) and ``saved[a][c]`` (bytes per image) of the block of units
    [a, c) with the space's cheapest head on it (the classifier and the global loss when c is
    the last unit)."""

    backbone: str
    step: list[list[float]]
    saved: list[list[int]]

    @property
    def units(self) -> int:
        return len(self.step) - 1

    def block(self, a: int, c: int, m: int) -> float:
        """Figure m (0 step cost, 1 saved bytes) of the block of units [a, c)."""
        return (self.step, self.saved)[m][a][c]

    def backprop(self, m: int) -> float:
        """End-to-end BP: one block of every unit, with the classifier."""
        return self.block(0, self.units, m)


def profile(backbone: str, space: SearchSpace, *, in_channels: int,
            image_size: tuple[int, int], num_classes: int, timer: StepTimer | None = None
            ) -> Profile:
    """Probes every unit once, and each head family once per distinct unit output; with a
    ``timer``, the step costs are its measured seconds (cheapest head: the least time), else
    FLOPs.

    A block's step cost is the sum of its units' and its head's. Its saved bytes are too, except
    that the storage between two pieces (a unit's output, the next unit's or the head's
    input) is counted once, as measure_cost counts distinct storages."""
    infos = get_backbone(backbone).describe(width=space.width, in_channels=in_channels,
                                            image_size=image_size)
    units = unit_probes(backbone, width=space.width, in_channels=in_channels,
                        image_size=image_size)
    # The cheapest head a sample can draw of each family: its least depth, the space's least
    # width, and no similarity branch when plain cross entropy is allowed.
    # pred is part of every other loss; without it, the cheaper of the others.
    losses: list[LocalLoss] = ["pred"] if "pred" in space.losses else list(space.losses)
    seen: dict[tuple[str, str, int, tuple[int, int], int], tuple[float, Saved]] = {}
    # (step cost, saved bytes past the unit's output, the same in the first block, whose input
    # is the image that an infopro head also saves)
    heads: list[tuple[float, int, int]] = []
    for info, (_, unit) in zip(infos[:-1], units):
        options = []
        place = HeadPlace(backbone, space.width, info.index, 0, 2, in_channels, image_size)
        for family, loss in ((f, x) for f in space.heads for x in losses):
            fam = AUX_HEADS.get(family)
            # Heads that copy later units differ with the unit they sit after.
            key = (family, loss, info.channels, info.size, info.index if fam.needs_place else -1)
            if key not in seen:
                aux = AuxSpec(family, fam.depths[0],
                              min(space.head_widths) if fam.has_width else 1.0, loss,
                              space.head_min_channels if fam.has_width else 0)
                f, saved_h = head_cost(family, depth=aux.depth, loss=loss, on=info,
                                       width=aux.width, num_classes=num_classes,
                                       min_channels=aux.min_channels, place=place)
                seen[key] = (f if timer is None else timer.head(aux, info, place), saved_h)
            options.append(seen[key])
        shared = units[0][1].input  # the image, when the first unit saves it
        heads.append((min(f for f, _ in options),
                      min(max(h.input, unit.output) + h.inner for _, h in options),
                      min(max(h.input, unit.output) + h.inner - min(h.image, shared)
                          for _, h in options)))
    flops_cls, cls = classifier_cost(backbone, width=space.width, last=infos[-1],
                                     num_classes=num_classes)
    step_cls = flops_cls if timer is None else timer.classifier(backbone, space.width)
    cls_saved = max(cls.input, units[-1][1].output) + cls.inner
    heads.append((step_cls, cls_saved, cls_saved))
    unit_step = ([float(f) for f, _ in units] if timer is None
                 else timer.units(backbone, space.width))
    n = len(units)
    step = [[0.0] * (n + 1) for _ in range(n + 1)]
    saved = [[0] * (n + 1) for _ in range(n + 1)]
    for a in range(n):
        f_sum, s_sum = 0.0, units[a][1].input
        for c in range(a + 1, n + 1):
            unit = units[c - 1][1]
            f_sum += unit_step[c - 1]
            s_sum += unit.inner + (max(units[c - 2][1].output, unit.input) if c - 1 > a else 0)
            step[a][c] = f_sum + heads[c - 1][0]
            _, later, first = heads[c - 1]
            saved[a][c] = s_sum + (later if a else first)
    return Profile(backbone, step, saved)


def least_largest(p: Profile, space: SearchSpace, m: int,
                  allowed: Callable[[int, int], bool] = lambda a, c: True) -> float:
    """The least, over the space's cut sets (K in its range, >= min_units units a block, only
    ``allowed`` blocks), of the largest block's figure m; inf when no cut set qualifies.
    Dynamic programming over (blocks, units covered): every cut set, without listing them."""
    n, u = p.units, space.min_units
    best = [[math.inf] * (n + 1) for _ in range(space.max_blocks + 1)]
    best[0][0] = 0.0
    for k in range(1, space.max_blocks + 1):
        for c in range(k * u, n + 1):
            for a in range((k - 1) * u, c - u + 1):
                if best[k - 1][a] < math.inf and allowed(a, c):
                    best[k][c] = min(best[k][c], max(best[k - 1][a], p.block(a, c, m)))
    return min(best[k][n] for k in range(space.min_blocks, space.max_blocks + 1))


def best_speedup(p: Profile, space: SearchSpace) -> float:
    return p.backprop(0) / least_largest(p, space, 0)


def least_memory(p: Profile, space: SearchSpace, min_speedup: float | None = None) -> float:
    """The least memory ratio, among decouplings at >= ``min_speedup`` when given."""
    cap = math.inf if min_speedup is None else p.backprop(0) / min_speedup
    return least_largest(p, space, 1, lambda a, c: p.block(a, c, 0) <= cap) / p.backprop(1)


def check_reachable(space: SearchSpace, *, in_channels: int, image_size: tuple[int, int],
                    num_classes: int, timer: StepTimer | None = None) -> None:
    """Refuses a constraint that no decoupling of the space meets, naming the best value the
    space reaches; the speed-up from ``timer``'s measured step times when given (what the
    trials are judged on), else from FLOPs.

    The values are an estimate of what a trial records, from per-unit costs and the
    cheapest head at each cut, measured once each: a block's step cost adds up exactly, but its
    saved bytes can count a storage twice (a unit's output saved by it and by the next
    unit), which measure_cost counts once. For the rare sample where they disagree, the
    objective still judges measure_cost's figures and RejectionGuard ends a hopeless run.
    """
    s, r = space.min_speedup, space.max_memory
    if s is None and r is None:
        return
    profiles = [profile(b, space, in_channels=in_channels, image_size=image_size,
                        num_classes=num_classes, timer=timer) for b in space.backbones]

    def where(backbone: str) -> str:
        units = f", >= {space.min_units} units a block" if space.min_units > 1 else ""
        return f"({backbone} x{space.width:g}, K<={space.max_blocks}{units})"

    if s is not None:
        top, b = max((best_speedup(p, space), p.backbone) for p in profiles)
        if top < s:
            raise UserError(f"--min-speedup {s:g}: the space reaches at most "
                            f"{_pair(top, s)[0]}x {where(b)}")
    if r is not None:
        low, b = min((least_memory(p, space), p.backbone) for p in profiles)
        if low > r:
            raise UserError(f"--max-memory {r:g}: the space needs at least "
                            f"{_pair(low, r)[0]} of BP's activation memory {where(b)}")
        if s is not None:
            low, b = min((least_memory(p, space, s), p.backbone) for p in profiles)
            if low > r:
                raise UserError(f"--min-speedup {s:g} with --max-memory {r:g}: no decoupling "
                                f"of the space meets both; at {s:g}x or more it needs at least "
                                f"{_pair(low, r)[0]} of BP's activation memory {where(b)}")


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
