"""The trial -> Decoupling mapping of a ``SearchSpace`` (``sample``), its inverse
(``params_for``), and the reference decouplings every study starts with.

The encoding is fixed-dimensional: every trial suggests the same parameters with the same
distributions, whatever K it draws, so TPE (multivariate), GP and NSGA-II all model the
whole space and none falls back to independent sampling. Parameters a trial does not use
(the heads of blocks beyond its K) are drawn and ignored. Parameter names are the study's
schema: never rename them in a resumable study.

    n_blocks           K, int in [min_blocks, max_blocks]
    cut_{i}            i = 1..max_blocks-1: where cut i goes, as a fraction of the units left
                       between cut i-1 and the last possible position (stick breaking), so
                       cut_1 always means "how deep the first block is"
    aux_{i}_head       i = 0..max_blocks-2: head family of block i
    aux_{i}_depth      int in [1, max searched depth of the allowed families], clipped to the
                       family's (and, for downstream heads, to the units after the block; with
                       ``pyramid`` > 0 a downstream head's depth follows aux_0_depth instead)
    aux_{i}_width      head width multiplier (ignored by width-less heads: linear, pool_linear)
    aux_{i}_loss       local loss
    lr                 shared learning rate (log scale)
    lr_mult_{i}        i = 0..max_blocks-1: block i's multiplier of lr (log scale)
    weight_decay       shared weight decay (log scale)
    backbone           only when the space has more than one backbone
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Protocol, Sequence

from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.decoupling import MAX_LR, AuxSpec, BlockOptim, Decoupling
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.heads import AUX_HEADS, pyramidal_depth
from bwbpf.spaces.losses import LocalLoss
from bwbpf.spaces.space import SearchSpace


class TrialLike(Protocol):
    """What ``sample`` needs of an Optuna trial (Trial, FixedTrial); spaces stays Optuna-free."""

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False
                      ) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def cuts_from_fractions(fractions: Sequence[float], n: int, min_units: int) -> tuple[int, ...]:
    """Stick breaking: cut i sits ``fractions[i]`` of the way through the positions it may take
    given cut i-1 and the blocks still to come. Always valid: increasing, >= min_units each."""
    k = len(fractions) + 1
    cuts, prev = [], 0
    for i, f in enumerate(fractions, start=1):
        lo, hi = prev + min_units, n - min_units * (k - i)
        prev = lo + round(f * (hi - lo))
        cuts.append(prev)
    return tuple(cuts)


def _aux(family: str, depth: int, width: float, loss: LocalLoss, min_channels: int,
         after: int) -> AuxSpec:
    """The AuxSpec of drawn values: the depth clipped to the family's range (and a downstream
    head's to the ``after`` units that follow its block)."""
    fam = AUX_HEADS.get(family)
    depth = min(max(depth, fam.depths[0]), fam.depths[1])
    if family == "downstream":
        depth = min(depth, after)
    return AuxSpec(family, depth, width if fam.has_width else 1.0, loss,
                   min_channels if fam.has_width else 0)


def sample(trial: TrialLike, space: SearchSpace) -> Decoupling:
    """Define-by-run: draws every parameter of the space (see the module docstring)."""
    backbone = space.backbones[0]
    if len(space.backbones) > 1:
        backbone = trial.suggest_categorical("backbone", list(space.backbones))
    k = trial.suggest_int("n_blocks", space.min_blocks, space.max_blocks)
    fractions = [trial.suggest_float(f"cut_{i}", 0.0, 1.0) for i in range(1, space.max_blocks)]
    drawn = []
    for i in range(space.max_blocks - 1):
        drawn.append((trial.suggest_categorical(f"aux_{i}_head", list(space.heads)),
                      trial.suggest_int(f"aux_{i}_depth", 1, space.max_depth),
                      trial.suggest_categorical(f"aux_{i}_width", list(space.head_widths)),
                      trial.suggest_categorical(f"aux_{i}_loss", list(space.losses))))
    lr = trial.suggest_float("lr", *space.lr, log=True)
    mults = [trial.suggest_float(f"lr_mult_{i}", *space.lr_mult, log=True)
             for i in range(space.max_blocks)]
    wd = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
    n = get_backbone(backbone).num_units
    cuts = cuts_from_fractions(fractions[:k - 1], n, space.min_units)
    aux = []
    for i, (family, depth, width, loss) in enumerate(drawn[:k - 1]):
        if family == "downstream" and space.pyramid > 0:
            depth = pyramidal_depth(drawn[0][1], i, k, space.pyramid)
        aux.append(_aux(family, depth, width, loss, space.head_min_channels, n - cuts[i]))
    optim = tuple(BlockOptim(lr=min(MAX_LR, lr * mults[i]), weight_decay=wd,
                             optimizer=space.optimizer) for i in range(k))
    return Decoupling(backbone, cuts, tuple(aux), optim, space.width)


_INDEXED = re.compile(r"(cut|aux|lr_mult)_(\d+)(?:_\w+)?")
# The first index of each indexed parameter that a K-block decoupling leaves unused.
_FIRST_UNUSED = {"cut": 0, "aux": -1, "lr_mult": 0}  # + K: cut_1..K-1, aux_0..K-2, lr_mult_0..K-1


def unused_params(params: Mapping[str, Any], num_blocks: int) -> list[str]:
    """The names among ``params`` that ``sample`` draws for every trial but a decoupling of
    ``num_blocks`` blocks ignores: the cuts, heads and learning-rate multipliers of the blocks
    past K (the encoding is fixed-dimensional; see the module docstring)."""
    out = []
    for name in params:
        m = _INDEXED.fullmatch(name)
        if m and int(m.group(2)) >= num_blocks + _FIRST_UNUSED[m.group(1)]:
            out.append(name)
    return out


def params_for(d: Decoupling, space: SearchSpace) -> dict[str, Any]:
    """The parameters that ``sample`` maps to ``d`` (for enqueuing reference decouplings);
    a ConfigError says why ``d`` lies outside the space."""

    def need(ok: bool, why: str) -> None:
        if not ok:
            raise ConfigError(f"not in the search space: {why}")

    need(d.backbone in space.backbones, f"backbone {d.backbone}")
    need(d.width == space.width, f"width {d.width} (space: {space.width})")
    k = d.num_blocks
    need(space.min_blocks <= k <= space.max_blocks, f"{k} blocks")
    sizes = [b - a for a, b in d.block_ranges()]
    need(min(sizes) >= space.min_units, f"a block of {min(sizes)} units")
    p: dict[str, Any] = {"n_blocks": k}
    if len(space.backbones) > 1:
        p["backbone"] = d.backbone
    n, prev = get_backbone(d.backbone).num_units, 0
    for i in range(1, space.max_blocks):
        frac = 0.5
        if i < k:
            lo, hi = prev + space.min_units, n - space.min_units * (k - i)
            frac = (d.cuts[i - 1] - lo) / (hi - lo) if hi > lo else 0.0
            prev = d.cuts[i - 1]
        p[f"cut_{i}"] = frac
    for i in range(space.max_blocks - 1):
        a = d.aux[i] if i < k - 1 else AuxSpec(space.heads[0], 1, 1.0, space.losses[0])
        need(a.family in space.heads and a.loss in space.losses, f"aux[{i}] {a.family}/{a.loss}")
        has_width = AUX_HEADS.get(a.family).has_width
        need(not has_width or a.width in space.head_widths, f"aux[{i}] width {a.width}")
        p.update({f"aux_{i}_head": a.family, f"aux_{i}_depth": a.depth,
                  f"aux_{i}_width": a.width if has_width else space.head_widths[0],
                  f"aux_{i}_loss": a.loss})
    lrs = [o.lr for o in d.optim]
    lr = min(max(math.exp(sum(map(math.log, lrs)) / k), space.lr[0]), space.lr[1])
    p["lr"] = lr
    for i in range(space.max_blocks):
        mult = lrs[i] / lr if i < k else min(max(1.0, space.lr_mult[0]), space.lr_mult[1])
        need(space.lr_mult[0] <= mult * (1 + 1e-9) and mult <= space.lr_mult[1] * (1 + 1e-9),
             f"block {i} learning rate {lrs[i] if i < k else ''}")
        p[f"lr_mult_{i}"] = min(max(mult, space.lr_mult[0]), space.lr_mult[1])
    wds = {o.weight_decay for o in d.optim}
    need(len(wds) == 1 and space.weight_decay[0] <= min(wds) <= space.weight_decay[1],
         f"weight decay {sorted(wds)}")
    p["weight_decay"] = wds.pop()
    need(all(o.optimizer == space.optimizer and o.momentum == BlockOptim().momentum
             for o in d.optim), "optimizer settings")
    back = sample(_Fixed(p), space)  # what the space makes of them: heads as drawn, clipped
    for i, (a, b) in enumerate(zip(d.aux, back.aux)):
        need(a == b, f"aux[{i}] {a.family} depth {a.depth}, {a.min_channels} channels at least "
             f"(the space draws depth {b.depth}, {b.min_channels} channels at least)")
    return p


class _Fixed:
    """Given parameters as a TrialLike."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return int(self.params[name])

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False
                      ) -> float:
        return float(self.params[name])

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.params[name]


def reference_decouplings(space: SearchSpace) -> dict[str, Decoupling]:
    """The baselines every study starts with: the BWBPF paper's decoupling and the uniform
    split, with the same K (4, or the space's largest K) and the space's middle optimiser."""
    backbone = space.backbones[0]
    k = min(4, space.max_blocks)
    usual = BlockOptim.lr
    lr = usual if space.lr[0] <= usual <= space.lr[1] else math.sqrt(space.lr[0] * space.lr[1])
    optim = BlockOptim(lr=lr, weight_decay=space.middle_weight_decay, optimizer=space.optimizer)
    return {
        "paper": Decoupling.paper_default(backbone, width=space.width, k=k, optim=optim),
        "uniform": Decoupling.uniform(backbone, k=k, width=space.width, optim=optim),
    }
