"""`run --warm-start FILE`: a short search on a target net that starts from a winner found on
another member of the family.

The file's decoupling is carried to the study's backbone and width under the *study's*
constraints and cost model (search.winners.carry, restricted to the space's numbers of blocks and
least block size; each head no deeper than the space draws it), and queued as the study's first
trial, marked ``transferred``; one the space cannot express is refused in one line. Where the
file's own heads fit no placement on the target (the transfer would refuse), its structure is
carried with one head family on every block instead (of the families the constraints allow, the
one whose placement stays nearest the file's cuts, then the cheapest), marked ``transferred:
every head F``, and up to ``TIED`` of the other families that fit, each placed on its own, come
first among the neighbours; only when none fits is the warm start refused. Then up to
``NEIGHBOURS`` feasible neighbours, each one edit away, marked ``neighbour i: what changed``:
one cut moved by one unit (each cut both ways, in order; at most ``CUT_MOVES``); one cut removed
(two blocks merged, the merged block keeping the later one's head and optimiser; at most
``CUT_REMOVALS``); one head family on every block (PredSim's kind of hand design; the families
the constraints allow, the cheapest on the target first: the least compute over all blocks and
heads; at most ``TIED``); then one head changed to another family (every block's first other
family, then their second, ...). A changed head has its family's least depth and keeps the width
and loss where the family has them; a neighbour the space cannot express is skipped. These
starting trials train in full: the pruner does not stop them (search.trial.objective). Every one is
queued as the space's parameters (spaces.params_for), so the sampler learns from them as from
its own; no more are queued than the study's budget has room for. A rerun queues only the
starting trials that have neither a finished trial that used budget nor a waiting or running
one.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import optuna
from optuna.trial import TrialState

from bwbpf.reports.record import TrialRecord
from bwbpf.search.study import budget
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.trial.constraints import meets
from bwbpf.search.trial.placement import Placer
from bwbpf.search.winners.carry import Carried, carry, distance
from bwbpf.spaces import (
    AuxSpec,
    ConfigError,
    Decoupling,
    UserError,
    get_backbone,
    params_for,
)
from bwbpf.spaces.decoupling import read_document
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.limits import Limits
from bwbpf.spaces.transfer import check_family

log = logging.getLogger("bwbpf.search")
NEIGHBOURS = 5  # besides the transferred decoupling
CUT_MOVES = 2  # of the neighbours, at most this many move a cut
CUT_REMOVALS = 1  # then at most this many merge two blocks
TIED = 2  # then at most this many put one family on every block; the others change one head


def read_warm_start(s: SearchSettings) -> Decoupling | None:
    """The --warm-start file's decoupling, checked against the space before storage is
    touched (a file that is not a decoupling of the space's family is refused in one line)."""
    if s.warm_start is None:
        return None
    path = Path(s.warm_start)
    d, _ = read_document(path, "--warm-start")
    try:
        check_family(d.backbone, s.space.backbones[0])
    except UserError as e:
        raise UserError(f"--warm-start {path}: {e}") from None
    return d


def starts(source: Decoupling, s: SearchSettings, placer: Placer) -> list[tuple[str, Decoupling]]:
    """(mark, decoupling) of the transferred decoupling and its neighbours, in queue order."""
    space = s.space
    limits = Limits(space.min_speedup, space.max_memory, s.cost_model)

    def carried_to_target(d: Decoupling) -> Carried:
        return carry(d, limits, space.backbones[0], space.width, shape=placer.shape,
                     timer=placer.timer, ks=range(space.min_blocks, space.max_blocks + 1),
                     min_units=space.min_units)

    placed: list[tuple[str, Decoupling]] = []  # other families, each placed on its own
    try:
        carried, mark = carried_to_target(source), "transferred"
    except UserError as refused:
        tied = _tied_transfers(source, s, placer, carried_to_target, refused)
        (family, carried), others = tied[0], tied[1:]
        mark = f"transferred: every head {family}"
        placed = [(f"every head {f}, placed anew", searched_depths(c.decoupling))
                  for f, c in others]
        log.info("warm start from %s: its own heads fit no placement here (%s); every head %s "
                 "instead", s.warm_start, refused, family)
    log.info("warm start from %s: %s", s.warm_start, carried.line())
    t = searched_depths(carried.decoupling)
    try:
        params_for(t, space)
    except ConfigError as e:
        raise UserError(f"--warm-start {s.warm_start}: the transferred decoupling lies outside "
                        f"the space ({e})") from None
    return [(mark, t), *neighbours(carried, s, placer, placed)]


def _tied_transfers(source: Decoupling, s: SearchSettings, placer: Placer,
                    carried_to_target: Callable[[Decoupling], Carried], refused: UserError
                    ) -> list[tuple[str, Carried]]:
    """``source`` with one head family on every block, carried to the target, for where its
    own heads fit no placement there: (family, carried) for each family the constraints allow
    that fits, the placement nearest the source's cuts first, then the cheapest (the least
    compute of all blocks and heads). ``refused`` (the transfer's refusal, naming the best
    the target reaches) when none fits either."""
    found: list[tuple[float, float, str, Carried]] = []
    for f in placer.viable:
        tied = _every_head(source, f, s.space.head_min_channels)
        if tied == source:
            continue
        try:
            c = carried_to_target(tied)
        except UserError:
            continue
        cost = placer.pieces(c.decoupling.backbone).of(c.decoupling).compute_overhead
        found.append((distance(c.decoupling, source), cost, f, c))
    if not found:
        raise refused
    return [(f, c) for _, _, f, c in sorted(found, key=lambda x: x[:3])]


def searched_depths(d: Decoupling) -> Decoupling:
    """``d`` with each head no deeper than a search draws it: a ``downstream`` head carried to
    a deeper net copies more units (spaces.transfer), more than the space can express. A
    shallower head costs less, so the constraints still hold."""
    aux = tuple(replace(a, depth=min(a.depth, AUX_HEADS.get(a.family).max_searched_depth))
                for a in d.aux)
    return replace(d, aux=aux)


def neighbours(carried: Carried, s: SearchSettings, placer: Placer,
               placed: Sequence[tuple[str, Decoupling]] = ()) -> list[tuple[str, Decoupling]]:
    """Up to NEIGHBOURS feasible points of the space one edit from the transferred one, each
    a different decoupling; ``placed`` (the source with another head family on every block,
    placed on its own, where the transferred one has one family for the source's heads) come
    first, at most TIED of them."""
    t, space = searched_depths(carried.decoupling), s.space
    pieces = placer.pieces(t.backbone)
    moves, removals = _cut_moves(t, space.min_units, pieces.units), _cut_removals(t)
    tied = [(f"every head {f}", _every_head(t, f, space.head_min_channels))
            for f in placer.viable if any(a.family != f for a in t.aux)]
    # the cheapest design first (the least compute of all blocks and heads, then the best
    # speed-up): it leaves the most room under the constraints
    tied.sort(key=lambda m: (pieces.of(m[1]).compute_overhead, -pieces.of(m[1]).speedup))
    heads = _head_changes(t, placer.viable, space.head_min_channels)
    chosen: list[tuple[str, Decoupling]] = []
    for group, most in ((list(placed), TIED), (moves, CUT_MOVES), (removals, CUT_REMOVALS),
                        (tied, TIED), (heads + moves + removals + tied, NEIGHBOURS)):
        taken = 0
        for what, d in group:
            if (taken < most and len(chosen) < NEIGHBOURS and d != t
                    and all(d != c for _, c in chosen) and _fits(d, s, placer)):
                chosen.append((what, d))
                taken += 1
    return [(f"neighbour {n}: {what}", d) for n, (what, d) in enumerate(chosen, 1)]


def _cut_moves(t: Decoupling, min_units: int, units: int) -> list[tuple[str, Decoupling]]:
    """Each cut one unit shallower, then deeper, in order, where the blocks keep their size."""
    out, bounds = [], (0, *t.cuts, units)
    for i, c in enumerate(t.cuts):
        for new in (c - 1, c + 1):
            if bounds[i] + min_units <= new <= bounds[i + 2] - min_units:
                cuts = (*t.cuts[:i], new, *t.cuts[i + 1:])
                out.append((f"cut {i + 1} moved to unit {new}", _with_cuts(t, cuts)))
    return out


def _cut_removals(t: Decoupling) -> list[tuple[str, Decoupling]]:
    """Each cut removed: the merged block keeps the later block's head and optimiser."""
    return [(f"cut {i + 1} removed", replace(
        t, cuts=t.cuts[:i] + t.cuts[i + 1:], aux=t.aux[:i] + t.aux[i + 1:],
        optim=t.optim[:i] + t.optim[i + 1:])) for i in range(len(t.cuts))]


def _head_changes(t: Decoupling, families: Sequence[str], min_channels: int
                  ) -> list[tuple[str, Decoupling]]:
    """One head changed: every block's first other family, then their second, ..."""
    out = []
    others = [[f for f in families if f != a.family] for a in t.aux]
    for r in range(max(map(len, others), default=0)):
        for i, a in enumerate(t.aux):
            if r < len(others[i]):
                aux = (*t.aux[:i], _head(others[i][r], a, min_channels), *t.aux[i + 1:])
                out.append((f"head {i + 1} {others[i][r]}", replace(t, aux=aux)))
    return out


def _with_cuts(t: Decoupling, cuts: tuple[int, ...]) -> Decoupling:
    """``t`` with one cut moved; the depth of a head that copies later units clipped to the
    units after it."""
    units = get_backbone(t.backbone).num_units
    aux = tuple(replace(a, depth=min(a.depth, units - c)) if AUX_HEADS.get(a.family).copies_units
                else a for a, c in zip(t.aux, cuts))
    return replace(t, cuts=cuts, aux=aux)


def _every_head(d: Decoupling, family: str, min_channels: int) -> Decoupling:
    """``d`` with a head of ``family`` on every block (PredSim's kind of hand design)."""
    return replace(d, aux=tuple(_head(family, a, min_channels) for a in d.aux))


def _head(family: str, like: AuxSpec, min_channels: int) -> AuxSpec:
    fam = AUX_HEADS.get(family)
    return AuxSpec(family, fam.depths[0], like.width if fam.has_width else 1.0, like.loss,
                   min_channels if fam.has_width else 0)


def _fits(d: Decoupling, s: SearchSettings, placer: Placer) -> bool:
    """Meets the study's constraints and is a point of its space."""
    try:
        params_for(d, s.space)
    except ConfigError:
        return False
    return meets(placer.constraints, placer.ratios(d))


def enqueue_warm_start(study: optuna.Study, s: SearchSettings, placer: Placer,
                  source: Decoupling | None) -> list[str]:
    """Queues the starting trials this study does not hold yet, as many as its budget has room for
    (first in the queue: before the references); their marks."""
    if source is None:
        return []
    trials = study.get_trials(deepcopy=False)
    spent = {t.number for t in budget.using(trials)}
    have = {r.start_kind for t in trials if (r := TrialRecord.of(t)).warm_start and (
        t.number in spent or t.state in (TrialState.WAITING, TrialState.RUNNING))}
    # no more than the budget has room for: one past it would wait in the queue for ever
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    room = s.n_trials - len(spent) - waiting
    queued: list[str] = []
    for mark, d in starts(source, s, placer):
        record = TrialRecord(warm_start=mark)
        if record.start_kind not in have and len(queued) < room:
            study.enqueue_trial(params_for(d, s.space), user_attrs=record.attrs())
            queued.append(mark)
    return queued
