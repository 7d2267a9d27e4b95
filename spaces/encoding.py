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
    tied_heads         only when the space's heads_tied is "draw": True gives every block
                       aux_0's head (depth, width, loss); the other aux_i are drawn and ignored
    backbone           only when the space has more than one backbone
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Protocol, Sequence

from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.copied_heads import pyramidal_depth
from bwbpf.spaces.decoupling import MAX_LR, AuxSpec, BlockOptim, Decoupling
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.heads import AUX_HEADS
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
    or momentum head's to the ``after`` units that follow its block)."""
    fam = AUX_HEADS.get(family)
    depth = min(max(depth, fam.depths[0]), fam.depths[1])
    if fam.copies_units:
        depth = min(depth, after)
    return AuxSpec(family, depth, width if fam.has_width else 1.0, loss,
                   min_channels if fam.has_width else 0)


Head = tuple[str, int, float, LocalLoss]  # family, depth, width, loss as drawn


@dataclass(frozen=True)
class Draw:
    """A trial's parameter values, before they become a decoupling: the cuts can still move
    (search.trial.placement) and the heads follow them (a downstream head's depth is clipped to the
    units after its cut)."""

    space: SearchSpace
    backbone: str
    k: int
    fractions: tuple[float, ...]  # cut_1..cut_{max_blocks-1}
    heads: tuple[Head, ...]  # aux_0..aux_{max_blocks-2}, one design repeated when tied
    lr: float
    mults: tuple[float, ...]
    weight_decay: float

    @property
    def units(self) -> int:
        return get_backbone(self.backbone).num_units

    @property
    def cuts(self) -> tuple[int, ...]:
        return self.cuts_for(self.k)

    def lighter(self, keep_loss: bool) -> Draw:
        """The same draw with every head at its family's least depth and the space's least
        width, and, unless ``keep_loss``, plain cross entropy where the space has it."""
        plain: LocalLoss | None = "pred" if "pred" in self.space.losses else None
        heads: tuple[Head, ...] = tuple(
            (f, 1, min(self.space.head_widths), x if keep_loss or plain is None else plain)
            for f, _, _, x in self.heads)
        return replace(self, heads=heads)

    def cuts_for(self, k: int) -> tuple[int, ...]:
        """The cut set the fractions mean for ``k`` blocks (stick breaking)."""
        return cuts_from_fractions(self.fractions[:k - 1], self.units, self.space.min_units)

    def decoupling(self, cuts: tuple[int, ...] | None = None) -> Decoupling:
        """The decoupling drawn, or the same draw with other ``cuts`` (of any K in the space:
        every block's head and learning rate is drawn, whatever K the trial drew)."""
        space, n = self.space, self.units
        cuts = self.cuts if cuts is None else cuts
        k = len(cuts) + 1
        aux = []
        for i, (family, depth, width, loss) in enumerate(self.heads[:k - 1]):
            # AugLocal's pyramid is for its own heads (not the momentum ones, which copy the
            # next units rather than sample the rest of the net)
            if family == "downstream" and space.pyramid > 0:
                depth = pyramidal_depth(self.heads[0][1], i, k, space.pyramid)
            aux.append(_aux(family, depth, width, loss, space.head_min_channels, n - cuts[i]))
        optim = tuple(BlockOptim(lr=min(MAX_LR, self.lr * self.mults[i]),
                                 weight_decay=self.weight_decay, optimizer=space.optimizer)
                      for i in range(k))
        return Decoupling(self.backbone, cuts, tuple(aux), optim, space.width)


def draw(trial: TrialLike, space: SearchSpace) -> Draw:
    """Define-by-run: draws every parameter of the space (see the module docstring)."""
    backbone = space.backbones[0]
    if len(space.backbones) > 1:
        backbone = trial.suggest_categorical("backbone", list(space.backbones))
    k = trial.suggest_int("n_blocks", space.min_blocks, space.max_blocks)
    fractions = [trial.suggest_float(f"cut_{i}", 0.0, 1.0) for i in range(1, space.max_blocks)]
    heads: list[Head] = []
    for i in range(space.max_blocks - 1):
        heads.append((trial.suggest_categorical(f"aux_{i}_head", list(space.heads)),
                      trial.suggest_int(f"aux_{i}_depth", 1, space.max_depth),
                      trial.suggest_categorical(f"aux_{i}_width", list(space.head_widths)),
                      trial.suggest_categorical(f"aux_{i}_loss", list(space.losses))))
    tied = space.heads_tied == "tied"
    if space.heads_tied == "draw":
        tied = bool(trial.suggest_categorical("tied_heads", [False, True]))
    if tied:
        heads = [heads[0]] * len(heads)
    lr = trial.suggest_float("lr", *space.lr, log=True)
    mults = [trial.suggest_float(f"lr_mult_{i}", *space.lr_mult, log=True)
             for i in range(space.max_blocks)]
    wd = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
    return Draw(space, backbone, k, tuple(fractions), tuple(heads), lr, tuple(mults), wd)


def sample(trial: TrialLike, space: SearchSpace) -> Decoupling:
    """The decoupling a trial's parameters mean, its cuts as drawn."""
    return draw(trial, space).decoupling()


_INDEXED = re.compile(r"(cut|aux|lr_mult)_(\d+)(?:_\w+)?")
# The first index of each indexed parameter that a K-block decoupling leaves unused.
_FIRST_UNUSED = {"cut": 0, "aux": -1, "lr_mult": 0}  # + K: cut_1..K-1, aux_0..K-2, lr_mult_0..K-1


def unused_params(params: Mapping[str, Any], num_blocks: int) -> list[str]:
    """The names among ``params`` that ``sample`` draws for every trial but a decoupling of
    ``num_blocks`` blocks ignores: the cuts, heads and learning-rate multipliers of the blocks
    past K, and the heads after aux_0's when they are tied (the encoding is fixed-dimensional;
    see the module docstring)."""
    out = []
    tied = params.get("tied_heads") is True  # aux_0's head serves every block
    for name in params:
        m = _INDEXED.fullmatch(name)
        if m and (int(m.group(2)) >= num_blocks + _FIRST_UNUSED[m.group(1)]
                  or (tied and m.group(1) == "aux" and int(m.group(2)) > 0)):
            out.append(name)
    return out


def _need(ok: bool, why: str) -> None:
    if not ok:
        raise ConfigError(f"not in the search space: {why}")


def params_for(d: Decoupling, space: SearchSpace) -> dict[str, Any]:
    """The parameters that ``sample`` maps to ``d`` (for enqueuing reference decouplings);
    a ConfigError says why ``d`` lies outside the space."""
    _need(d.backbone in space.backbones, f"backbone {d.backbone}")
    _need(d.width == space.width, f"width {d.width} (space: {space.width})")
    k = d.num_blocks
    _need(space.min_blocks <= k <= space.max_blocks, f"{k} blocks")
    sizes = [b - a for a, b in d.block_ranges()]
    _need(min(sizes) >= space.min_units, f"a block of {min(sizes)} units")
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
    p.update(_head_params(d, space))
    p.update(_optim_params(d, space))
    back = sample(_Fixed(p), space)  # what the space makes of them: heads as drawn, clipped
    for i, (a, b) in enumerate(zip(d.aux, back.aux)):
        _need(a == b, f"aux[{i}] {a.family} depth {a.depth}, {a.min_channels} channels at "
              f"least (the space draws depth {b.depth}, {b.min_channels} channels at least)")
    return p


def _head_params(d: Decoupling, space: SearchSpace) -> dict[str, Any]:
    p: dict[str, Any] = {}
    for i in range(space.max_blocks - 1):
        a = d.aux[i] if i < d.num_blocks - 1 else AuxSpec(space.heads[0], 1, 1.0,
                                                          space.losses[0])
        _need(a.family in space.heads and a.loss in space.losses,
              f"aux[{i}] {a.family}/{a.loss}")
        has_width = AUX_HEADS.get(a.family).has_width
        _need(not has_width or a.width in space.head_widths, f"aux[{i}] width {a.width}")
        p.update({f"aux_{i}_head": a.family, f"aux_{i}_depth": a.depth,
                  f"aux_{i}_width": a.width if has_width else space.head_widths[0],
                  f"aux_{i}_loss": a.loss})
    same = all(a == d.aux[0] for a in d.aux)
    _need(space.heads_tied != "tied" or same, "heads that differ (the space ties them)")
    if space.heads_tied == "draw":
        p["tied_heads"] = False  # the free draw reproduces any heads
    return p


def _optim_params(d: Decoupling, space: SearchSpace) -> dict[str, Any]:
    k, lrs = d.num_blocks, [o.lr for o in d.optim]
    lr = min(max(math.exp(sum(map(math.log, lrs)) / k), space.lr[0]), space.lr[1])
    p: dict[str, Any] = {"lr": lr}
    for i in range(space.max_blocks):
        mult = lrs[i] / lr if i < k else min(max(1.0, space.lr_mult[0]), space.lr_mult[1])
        _need(space.lr_mult[0] <= mult * (1 + 1e-9) and mult <= space.lr_mult[1] * (1 + 1e-9),
              f"block {i} learning rate {lrs[i] if i < k else ''}")
        p[f"lr_mult_{i}"] = min(max(mult, space.lr_mult[0]), space.lr_mult[1])
    wds = {o.weight_decay for o in d.optim}
    _need(len(wds) == 1 and space.weight_decay[0] <= min(wds) <= space.weight_decay[1],
          f"weight decay {sorted(wds)}")
    p["weight_decay"] = wds.pop()
    _need(all(o.optimizer == space.optimizer and o.momentum == BlockOptim().momentum
              for o in d.optim), "optimizer settings")
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
