"""Samples feasible by construction (the space's ``cut_placement: feasible``, the default).

Under ``--min-speedup`` / ``--max-memory`` most random cut sets break a constraint (the
feasible ones are a thin slice of the space), and a rejected sample teaches the sampler little.
So a trial's heads, learning rates and K are drawn first, as always, and its cut set is drawn
by the usual stick-breaking parameters; when that cut set breaks a constraint *with the drawn
heads*, the trial moves to the feasible cut set of the same K nearest to it (the least total
distance between matching cuts, in units; ties to the shallower). When no cut set of that K is
feasible (K=2 rarely reaches 2x), the nearest K that has one is used, with the cut set its
fractions mean as the target: every block's head and learning rate is drawn whatever K is.
The parameters keep their meaning wherever they are feasible, and TPE learns which region of
each parameter pays.

Costs are the figures of search.trial.reach's pieces (measured step times or FLOPs), judged by the
one rule (``constraints.meets``, unrounded) that the objective applies to the same figures
(``Placer.ratios``), so a moved trial is never rejected. When no cut set of
any K meets the constraints with those heads (wide or deep heads can cost more than a block),
the heads are lightened, first to their family's least depth and the space's least width, then
also to plain cross entropy, placing again each time; the trial records it
(``TrialRecord.lighter_heads``). The head families stay as drawn (replacing one would credit
it with another's result); instead, a family that cannot fit at all under the constraints (its
lightest design on every block breaks one at every cut set: an ``ir`` head at a block's full
resolution can cost more than the block) is not proposed (``ViableHeads`` wraps the study's
sampler), and the run says so. Only when a sample still breaks a constraint (heavy heads
together, where each alone fits) does it stay as drawn, to be rejected: rejection remains the
safety net. Reference trials are never moved.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any, Callable, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from bwbpf.search.trial.constraints import Constraint, meets, of_space
from bwbpf.search.trial.reach import Pieces, cheapest_heads, cut_sets
from bwbpf.spaces import Decoupling, SearchSpace
from bwbpf.spaces.encoding import Draw
from bwbpf.trainers.cost import Ratios
from bwbpf.trainers.timing import StepTimer


class Placer:
    """Places drawn trials of one study (its space, constraints, input shape and timer)."""

    def __init__(self, space: SearchSpace, constraints: Sequence[Constraint], *,
                 in_channels: int, image_size: tuple[int, int], num_classes: int,
                 timer: StepTimer | None = None) -> None:
        self.space, self.constraints = space, list(constraints)
        self.shape = {"in_channels": in_channels, "image_size": image_size,
                      "num_classes": num_classes}
        self.timer = timer
        self._pieces: dict[str, Pieces] = {}

    @property
    def active(self) -> bool:
        return bool(self.constraints) and self.space.cut_placement == "feasible"

    def under(self, space: SearchSpace) -> Placer:
        """A placer for ``space`` (the same backbones, width and timer; other limits or
        choices) that reuses the pieces probed so far: they do not depend on the limits."""
        if space.width != self.space.width:
            raise ValueError(f"pieces at width {self.space.width:g}, not {space.width:g}")
        other = Placer(space, of_space(space), **self.shape,  # type: ignore[arg-type]
                       timer=self.timer)
        other._pieces = self._pieces
        return other

    def ratios(self, d: Decoupling) -> Ratios:
        """``d``'s figures against BP, as the constraints judge them (here and in the
        objective)."""
        return self.pieces(d.backbone).of(d)

    def pieces(self, backbone: str) -> Pieces:
        if backbone not in self._pieces:
            self._pieces[backbone] = Pieces(backbone, self.space.width, timer=self.timer,
                                            **self.shape)  # type: ignore[arg-type]
        return self._pieces[backbone]

    @functools.cached_property
    def viable(self) -> tuple[str, ...]:
        """The head families that can fit under the constraints: their lightest design on
        every block meets them at some cut set of some K, on some backbone of the space. The
        same for every run of a study: it follows from the study's stored step times, or from
        FLOPs. All of them when placement is off, or when none fits."""
        if not self.active:
            return self.space.heads
        fits = tuple(f for f in self.space.heads
                     if any(self._fits(f, b) for b in self.space.backbones))
        return fits or self.space.heads

    @property
    def left_out(self) -> tuple[str, ...]:
        return tuple(f for f in self.space.heads if f not in self.viable)

    def _fits(self, family: str, backbone: str) -> bool:
        space, p = self.space, self.pieces(backbone)
        return any(meets(self.constraints, p.costs(cuts, (aux,) * (k - 1)))
                   for aux in cheapest_heads(space) if aux.family == family
                   for k in range(space.min_blocks, space.max_blocks + 1)
                   for cuts in cut_sets(p.units, k, space.min_units))

    def place(self, drawn: Draw) -> tuple[Decoupling, bool]:
        """The drawn decoupling, or the same draw at the nearest feasible cut set: of the drawn
        K when one exists, else of the nearest K that has one (the deeper first); when no
        cut set is feasible with the drawn heads, with lighter heads (``Draw.lighter``).
        Also whether the heads were lightened."""
        d = drawn.decoupling()
        if not self.active:
            return d, False
        p = self.pieces(d.backbone)
        if meets(self.constraints, self.ratios(d)):
            return d, False
        space = self.space
        ks = sorted(range(space.min_blocks, space.max_blocks + 1),
                    key=lambda k: (abs(k - drawn.k), -k))
        for heads in (drawn, drawn.lighter(keep_loss=True), drawn.lighter(keep_loss=False)):
            for k in ks:
                moved = self._nearest(heads, p, drawn.cuts_for(k))
                if moved is not None:
                    return moved, heads is not drawn
        return d, False

    def best(self, design: Callable[[int], Draw], ks: Sequence[int]) -> Decoupling | None:
        """Of ``design(k)``'s decouplings (one for each cut set of each K in ``ks``, in that
        order), the one with the best speed-up among those that meet the constraints (the
        least memory among equals; the first of full equals); None when none does."""
        best: tuple[float, float, Decoupling] | None = None
        for k in ks:
            drawn = design(k)
            p = self.pieces(drawn.backbone)
            for cuts in cut_sets(p.units, k, self.space.min_units):
                d = drawn.decoupling(cuts)
                r = p.of(d)
                if meets(self.constraints, r) and (
                        best is None or (r.speedup, -r.memory_ratio) > best[:2]):
                    best = (r.speedup, -r.memory_ratio, d)
        return None if best is None else best[2]

    def _nearest(self, drawn: Draw, p: Pieces, target: tuple[int, ...]) -> Decoupling | None:
        """The draw at the feasible cut set of len(target) + 1 blocks nearest ``target``."""
        best: tuple[int, Decoupling] | None = None
        for cuts in cut_sets(p.units, len(target) + 1, self.space.min_units):
            distance = sum(abs(a - b) for a, b in zip(cuts, target))
            if best is not None and distance >= best[0]:
                continue  # in order, so the first of equals (the shallower) is kept
            moved = drawn.decoupling(cuts)
            if meets(self.constraints, p.of(moved)):
                best = (distance, moved)
        return None if best is None else best[1]


HEAD_PARAM = re.compile(r"aux_\d+_head")


class ViableHeads(optuna.samplers.BaseSampler):
    """A study's sampler, drawing ``aux_i_head`` among ``allowed`` families only.

    The parameters keep their declared distributions (a study's distributions never change,
    and reference trials may hold any family), so what is recorded is what was trained and
    the sampler learns from true values: a proposal outside ``allowed`` is drawn again from
    the base sampler (up to ``TRIES`` times), then uniformly among ``allowed``. Enqueued
    parameters (the references) bypass samplers."""

    TRIES = 8

    def __init__(self, base: optuna.samplers.BaseSampler, allowed: Sequence[str],
                 seed: int | None = None) -> None:
        self.base, self.allowed, self.seed = base, list(allowed), seed

    def _bad(self, name: str, value: Any) -> bool:
        return HEAD_PARAM.fullmatch(name) is not None and value not in self.allowed

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        out = self.base.sample_relative(study, trial, search_space)
        return {k: v for k, v in out.items() if not self._bad(k, v)}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        for _ in range(self.TRIES):
            v = self.base.sample_independent(study, trial, param_name, param_distribution)
            if not self._bad(param_name, v):
                return v
        # seeded by the trial, so workers sharing a study and a seed do not repeat each other
        return random.Random(f"{self.seed}:{trial.number}:{param_name}").choice(self.allowed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
