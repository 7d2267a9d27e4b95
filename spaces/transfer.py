"""Backbone-relative cut positions, and transfer of a decoupling to another family member.

A cut (the unit a block starts at) is written as (stage, fraction): the stage that unit is in,
and how far into that stage it sits, ``(unit - stage start) / stage length`` in [0, 1). A cut
at a stage boundary has fraction 0. Transfer to a deeper or shallower member of the same family
puts cut i at ``stage start' + round(fraction * stage length')`` in the same stage: stages
follow the resolution, and stage s of two members works at the same one. A target with more
stages (vgg8b's 4 to VGG-16's 5) gives the stages it adds to the last block; a cut in a stage
the target lacks is refused. Cuts that land on one another are pushed one unit deeper, in
order. Aux heads and optimisers stay with their blocks; heads are re-sized from the target's
channels when the net is built. A
``downstream`` head's depth (the later units it copies) scales by the same relative rule: the
number of units that follow its block on the target over that number on the source, rounded
half up, at least 1; its width is relative to the units it copies, so it stays.

This is the stage rule. ``retarget`` puts a decoupling's heads and optimisers on any cut set
of the target, also with another number of blocks; search.winners.carry uses it to move the cuts
where the stage rule breaks the constraints a decoupling was found under.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.heads import AUX_HEADS

if TYPE_CHECKING:
    from bwbpf.spaces.decoupling import AuxSpec, Decoupling


@dataclass(frozen=True)
class RelativeCut:
    stage: int
    fraction: float  # in [0, 1)


def _stages(backbone: str) -> list[tuple[int, int]]:
    """(start unit, length) of every stage."""
    out: list[tuple[int, int]] = []
    for i, s in enumerate(get_backbone(backbone).stage_of_units()):
        if s == len(out):
            out.append((i, 0))
        start, n = out[s]
        out[s] = (start, n + 1)
    return out


def relative_cuts(backbone: str, cuts: tuple[int, ...]) -> list[RelativeCut]:
    stages = _stages(backbone)
    stage_of = get_backbone(backbone).stage_of_units()
    out = []
    for c in cuts:
        s = stage_of[c]
        start, n = stages[s]
        out.append(RelativeCut(s, round((c - start) / n, 6)))
    return out


def place_cuts(backbone: str, rel: list[RelativeCut]) -> tuple[int, ...]:
    """Unit indices on ``backbone`` for relative cuts (deterministic; keeps their number)."""
    stages = _stages(backbone)
    n_units = get_backbone(backbone).num_units
    if len(rel) > n_units - 1:
        raise ConfigError(f"backbone: {backbone} has {n_units} units and cannot hold "
                          f"{len(rel) + 1} blocks")
    cuts: list[int] = []
    for i, r in enumerate(rel):
        if not 0 <= r.stage < len(stages):
            raise ConfigError(f"cuts[{i}]: stage {r.stage} does not exist in {backbone} "
                              f"(stages 0..{len(stages) - 1})")
        start, n = stages[r.stage]
        c = max(1, start + math.floor(r.fraction * n + 0.5))  # round half up
        cuts.append(max(c, cuts[-1] + 1) if cuts else c)
    # Pushed past the end: pull back from the last unit, keeping one unit per block.
    for i in range(len(cuts) - 1, -1, -1):
        limit = n_units - (len(cuts) - i)
        cuts[i] = min(cuts[i], limit)
    return tuple(cuts)


def positions(backbone: str, cuts: tuple[int, ...]) -> list[float]:
    """Each cut as one number, its stage plus its fraction of that stage: comparable between
    members of a family (stage s works at the same resolution on each)."""
    return [r.stage + r.fraction for r in relative_cuts(backbone, cuts)]


def transfer(d: Decoupling, backbone: str, width: float | None = None) -> Decoupling:
    """``d`` on ``backbone`` at the same stages and fractions (the module's rule)."""
    check_family(d.backbone, backbone)
    return retarget(d, backbone, place_cuts(backbone, relative_cuts(d.backbone, d.cuts)), width)


def check_family(source: str, target: str) -> None:
    src, dst = get_backbone(source), get_backbone(target)
    if src.family != dst.family:
        raise ConfigError(f"backbone: cannot transfer a {src.family} decoupling ({source}) "
                          f"to {target} ({dst.family}); same family only")


def retarget(d: Decoupling, backbone: str, cuts: tuple[int, ...], width: float | None = None
             ) -> Decoupling:
    """``d``'s heads and optimisers on ``backbone`` cut at ``cuts``. With as many blocks as
    ``d``, block i takes block i's; with another number, each block with a head takes the
    head and optimiser of the source block whose end (its cut) sits nearest its own, by
    ``positions`` (ties to the shallower), and the last block the last block's optimiser. A
    ``downstream`` head's depth follows ``transfer_depth``."""
    src_n, dst_n = get_backbone(d.backbone).num_units, get_backbone(backbone).num_units
    if len(cuts) == len(d.cuts):
        pick = list(range(len(cuts)))
    elif not d.cuts:
        raise ConfigError(f"cuts: a decoupling of one block (end-to-end BP) has no head to put "
                          f"on {len(cuts)} cut(s) of {backbone}")
    else:
        ours, theirs = positions(backbone, cuts), positions(d.backbone, d.cuts)
        pick = [min(range(len(theirs)), key=lambda i: (abs(theirs[i] - p), i)) for p in ours]
    aux = tuple(transfer_depth(d.aux[i], src_n - d.cuts[i], dst_n - c)
                for i, c in zip(pick, cuts))
    optim = (*(d.optim[i] for i in pick), d.optim[-1])
    return replace(d, backbone=backbone, cuts=tuple(cuts), aux=aux, optim=optim,
                   width=d.width if width is None else width)


def transfer_depth(aux: AuxSpec, after_src: int, after_dst: int) -> AuxSpec:
    if not AUX_HEADS.get(aux.family).copies_units:
        return aux
    most = min(after_dst, AUX_HEADS.get(aux.family).depths[1])
    depth = math.floor(aux.depth * after_dst / after_src + 0.5)
    return replace(aux, depth=max(1, min(most, depth)))
