"""The Decoupling: where a backbone is cut, and how each block learns.

A decoupling with K blocks has K-1 cuts (unit indices where a new block starts), K-1 aux specs
(one per block but the last, which learns from the global loss through the classifier) and K
optimiser settings. K = 1 is end-to-end backprop on the same backbone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from itertools import combinations
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

from bwbpf.spaces.backbone_spec import stage_boundaries
from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.document import at_path, checked_document, parse_json, to_document
from bwbpf.spaces.errors import ConfigError, UserError
from bwbpf.spaces.files import dumps
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.losses import LOCAL_LOSSES, LocalLoss
from bwbpf.spaces.partition import check_cuts
from bwbpf.spaces.transfer import RelativeCut, relative_cuts, transfer

Optimizer = Literal["sgd", "adamw"]
MAX_WIDTH = 16.0  # width multipliers beyond this are typos, not networks
MAX_MIN_CHANNELS = 4096


def _require(ok: bool, where: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {msg}")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


MAX_LR = 10.0  # the largest learning rate any block, search or baseline may use


@dataclass(frozen=True)
class BlockOptim:
    """One block's optimiser. The cosine schedule and warm-up come from the training plan."""

    lr: float = 0.05
    weight_decay: float = 5e-4
    optimizer: Optimizer = "sgd"  # sgd = SGD with Nesterov momentum
    momentum: float = 0.9

    def __post_init__(self) -> None:
        _require(_is_number(self.lr) and 0 < self.lr <= MAX_LR, "lr",
                 f"{self.lr!r} not in (0, {MAX_LR:g}]")
        wd = self.weight_decay
        _require(_is_number(wd) and 0 <= wd <= 1, "weight_decay", f"{wd!r} not in [0, 1]")
        opts = get_args(Optimizer)
        _require(self.optimizer in opts, "optimizer", f"{self.optimizer!r} not one of {opts}")
        m = self.momentum
        _require(_is_number(m) and 0 <= m < 1, "momentum", f"{m!r} not in [0, 1)")


@dataclass(frozen=True)
class AuxSpec:
    """One block's aux head family, its knobs, and the local loss computed through it."""

    family: str = "linear"
    depth: int = 1
    width: float = 1.0
    loss: LocalLoss = "pred"
    min_channels: int = 0  # the head's own layers have at least this many channels

    def __post_init__(self) -> None:
        _require(self.family in AUX_HEADS, "family",
                 f"unknown aux head {self.family!r}; valid: {', '.join(AUX_HEADS.names())}")
        fam = AUX_HEADS.get(self.family)
        lo, hi = fam.depths
        d = self.depth
        _require(isinstance(d, int) and not isinstance(d, bool) and lo <= d <= hi, "depth",
                 f"{d!r} not in {lo}..{hi} for the {self.family} head")
        w = self.width
        _require(_is_number(w) and 0 < w <= MAX_WIDTH, "width", f"{w!r} not in (0, {MAX_WIDTH}]")
        _require(fam.has_width or w == 1.0, "width",
                 f"the {self.family} head has no width knob; must be 1.0, got {w!r}")
        _require(self.loss in LOCAL_LOSSES, "loss",
                 f"unknown local loss {self.loss!r}; valid: {', '.join(LOCAL_LOSSES)}")
        m = self.min_channels
        _require(isinstance(m, int) and not isinstance(m, bool) and 0 <= m <= MAX_MIN_CHANNELS,
                 "min_channels", f"{m!r} not an integer in 0..{MAX_MIN_CHANNELS}")


@dataclass(frozen=True)
class Decoupling:
    backbone: str
    cuts: tuple[int, ...]  # unit indices that start blocks 2..K, strictly increasing
    aux: tuple[AuxSpec, ...]  # K-1 entries
    optim: tuple[BlockOptim, ...]  # K entries
    width: float = 1.0

    def __post_init__(self) -> None:
        get_backbone(self.backbone)  # unknown names list the valid ones
        w = self.width
        _require(_is_number(w) and 0 < w <= MAX_WIDTH, "width", f"{w!r} not in (0, {MAX_WIDTH}]")
        check_cuts(self.cuts, self.backbone)
        k = len(self.cuts) + 1
        _require(len(self.aux) == k - 1, "aux", f"{len(self.aux)} aux heads for {k} blocks; "
                 f"need one per block but the last ({k - 1})")
        _require(len(self.optim) == k, "optim",
                 f"{len(self.optim)} optimiser settings for {k} blocks")
        for name, items, cls in (("aux", self.aux, AuxSpec), ("optim", self.optim, BlockOptim)):
            for i, item in enumerate(items):
                _require(isinstance(item, cls), f"{name}[{i}]", f"expected {cls.__name__}")
        spec = get_backbone(self.backbone)
        spec.check_width(self.width)
        n = spec.num_units
        for i, (aux, cut) in enumerate(zip(self.aux, self.cuts)):
            _require(not AUX_HEADS.get(aux.family).copies_units or aux.depth <= n - cut,
                     f"aux[{i}].depth", f"{aux.depth}: a {aux.family} head copies units that "
                     f"follow its block, and {n - cut} follow block {i + 1}")
            why = spec.refusal(aux.family, aux.loss, cut - 1)
            _require(why is None, f"aux[{i}]", f"{why}; not after unit {cut - 1} of "
                     f"{self.backbone}")

    @property
    def num_blocks(self) -> int:
        return len(self.cuts) + 1

    def block_ranges(self) -> list[tuple[int, int]]:
        """[start, end) unit ranges of the blocks."""
        edges = [0, *self.cuts, get_backbone(self.backbone).num_units]
        return list(zip(edges[:-1], edges[1:]))

    def relative_cuts(self) -> list[RelativeCut]:
        """The cuts as (stage, fraction within the stage): the backbone-independent form."""
        return relative_cuts(self.backbone, self.cuts)

    def transfer(self, backbone: str, width: float | None = None) -> Decoupling:
        """The same decoupling on another member of the family (see ``spaces.transfer``)."""
        return transfer(self, backbone, width)

    def to_json(self, **extras: Any) -> str:
        """The versioned JSON document (``spaces.document.to_document``); extras: input,
        metrics, provenance, training, constraints, transfer."""
        return dumps(to_document(self, **extras))

    @classmethod
    def from_json(cls, text: str, where: str = "decoupling") -> Decoupling:
        """Parses and validates a versioned document; errors name the JSON path."""
        return from_document(parse_json(text, where))

    # ------------------------------------------------------------ reference decouplings
    @classmethod
    def paper_default(cls, backbone: str, *, width: float = 1.0, k: int = 4,
                      optim: BlockOptim | None = None) -> Decoupling:
        """The BWBPF paper's decoupling: cuts at stage boundaries, `linear` heads, K=4 where the
        backbone has enough stages. Of the stage boundaries, the K-1 that make the blocks'
        unit counts most even are used (VGG-19: after conv 4, 8, 12; ResNet: at stages 2-4).
        A backbone of one stage (a vision transformer's tokens) gets K even blocks."""
        stages = get_backbone(backbone).stage_of_units()
        bounds = stage_boundaries(stages)
        if not bounds:  # one stage (a vision transformer's tokens): even cuts
            return cls.uniform(backbone, k=min(k, len(stages)), width=width, optim=optim)
        k = min(k, len(bounds) + 1)
        cuts = _most_even_subset(bounds, k - 1, len(stages))
        return cls._with(backbone, cuts, AuxSpec(), optim or BlockOptim(), width)

    @classmethod
    def uniform(cls, backbone: str, *, k: int = 4, width: float = 1.0,
                aux: AuxSpec | None = None, optim: BlockOptim | None = None) -> Decoupling:
        """K blocks with unit counts as equal as possible."""
        n = get_backbone(backbone).num_units
        _require(1 <= k <= n, "k", f"{k} blocks not in 1..{n} for {backbone}")
        cuts = tuple(round(i * n / k) for i in range(1, k))
        return cls._with(backbone, cuts, aux or AuxSpec(), optim or BlockOptim(), width)

    @classmethod
    def end_to_end(cls, backbone: str, *, width: float = 1.0,
                   optim: BlockOptim | None = None) -> Decoupling:
        """One block: end-to-end backprop on the same backbone (the BP baseline)."""
        return cls._with(backbone, (), AuxSpec(), optim or BlockOptim(), width)

    @classmethod
    def _with(cls, backbone: str, cuts: tuple[int, ...], aux: AuxSpec, optim: BlockOptim,
              width: float) -> Decoupling:
        k = len(cuts) + 1
        return cls(backbone, tuple(cuts), (aux,) * (k - 1), (optim,) * k, width)

    # ------------------------------------------------------------ plain-data form
    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "width": self.width,
            "cuts": list(self.cuts),
            "aux": [asdict(a) for a in self.aux],
            "optim": [asdict(o) for o in self.optim],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "$") -> Decoupling:
        """Builds and validates; every error names the path of the bad field."""
        _require(isinstance(d, Mapping), path, "expected an object")
        _fields_of(d, path, required={"backbone", "cuts", "aux", "optim"}, optional={"width"})
        cuts, aux, optim = d["cuts"], d["aux"], d["optim"]
        for key, v in (("cuts", cuts), ("aux", aux), ("optim", optim)):
            _require(isinstance(v, list), f"{path}.{key}", f"expected a list, got {v!r}")
        _require(isinstance(d["backbone"], str), f"{path}.backbone", "expected a string")
        specs = tuple(_entry(AuxSpec, a, f"{path}.aux[{i}]") for i, a in enumerate(aux))
        opts = tuple(_entry(BlockOptim, o, f"{path}.optim[{i}]") for i, o in enumerate(optim))
        try:
            return cls(d["backbone"], tuple(cuts), specs, opts, d.get("width", 1.0))
        except ConfigError as e:
            raise ConfigError(f"{path}.{e}") from None


def _fields_of(d: Mapping[str, Any], path: str, *, required: set[str], optional: set[str]) -> None:
    missing = sorted(required - set(d))
    _require(not missing, f"{path}.{missing[0] if missing else ''}", "missing required field")
    unknown = sorted(set(d) - required - optional)
    _require(not unknown, f"{path}.{unknown[0] if unknown else ''}", "unknown field")


def _entry(cls: type[AuxSpec] | type[BlockOptim], d: object, path: str) -> Any:
    _require(isinstance(d, Mapping), path, f"expected an object, got {d!r}")
    assert isinstance(d, Mapping)
    names = {f.name for f in fields(cls)}
    _fields_of(d, path, required=set(), optional=names)
    try:
        return cls(**d)
    except ConfigError as e:
        raise ConfigError(f"{path}.{e}") from None


def _most_even_subset(bounds: list[int], m: int, n: int) -> tuple[int, ...]:
    """The m boundaries (of ``bounds``) whose blocks have the most even unit counts;
    ties go to the later cuts (a very shallow first block learns poorly)."""
    best: tuple[int, ...] = ()
    best_key: tuple[float, tuple[int, ...]] | None = None
    for combo in combinations(bounds, m):
        sizes = [b - a for a, b in zip((0, *combo), (*combo, n))]
        mean = n / len(sizes)
        key = (sum((s - mean) ** 2 for s in sizes), tuple(-c for c in combo))
        if best_key is None or key < best_key:
            best, best_key = combo, key
    return best


def from_document(doc: Any) -> Decoupling:
    """Validates a parsed document (``spaces.document.checked_document``); returns its
    Decoupling."""
    doc = checked_document(doc)
    blocks = doc["blocks"]
    aux = tuple(at_path(f"$.blocks[{k}].aux", lambda b=b: AuxSpec(**b["aux"]))
                for k, b in enumerate(blocks[:-1]))
    optim = tuple(at_path(f"$.blocks[{k}].optim", lambda b=b: BlockOptim(**b["optim"]))
                  for k, b in enumerate(blocks))
    cuts = tuple(b["units"][0] for b in blocks[1:])
    return at_path("$", lambda: Decoupling(doc["backbone"]["name"], cuts, aux, optim,
                                           doc["backbone"]["width"]))


def read_document(path: Path, flag: str) -> tuple[Decoupling, dict[str, Any]]:
    """A decoupling file as its Decoupling and its (validated) document; any failure is one
    ConfigError line starting "<flag> <path>:"."""
    where = f"{flag} {path}"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read ({type(e).__name__})") from None
    doc = parse_json(text, where)
    try:
        return from_document(doc), doc
    except UserError as e:
        raise ConfigError(f"{where}: {e}") from None
