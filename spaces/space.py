"""The search space: which decouplings a study may try (``SearchSpace``), checked when it is
made, and read from a space file. How a trial's parameters map to a decoupling is in
``bwbpf.spaces.encoding``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

from bwbpf.spaces.backbones import get_backbone, list_backbones
from bwbpf.spaces.declared import check, setting
from bwbpf.spaces.decoupling import MAX_LR, AuxSpec, BlockOptim, Decoupling, Optimizer
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.losses import LOCAL_LOSSES, LocalLoss
from bwbpf.spaces.named_nets import is_named
from bwbpf.spaces.values import load_json, load_yaml, quote, read_small, typed

LrSchedule = Literal["cosine", "onecycle"]  # how trainers.optim schedules a block's lr
LR_SCHEDULES: tuple[LrSchedule, ...] = get_args(LrSchedule)
HeadTying = Literal["draw", "tied", "free"]
Placement = Literal["feasible", "as-drawn"]


SPACE, CONSTRAINTS = "search space", "constraints"
log = logging.getLogger(__name__)


def _fail(field: str, msg: str) -> None:
    raise ConfigError(f"space.{field}: {msg}")


@dataclass(frozen=True)
class SearchSpace:
    # Fields declared with a flag are also `run` flags (the default shown: the --space file's,
    # else the field's); ``before``: what a study stored before the field existed meant.
    backbones: tuple[str, ...] = setting(("vgg8b",), flag="--backbone", kind="names",
                                         group=SPACE,
                                         help="comma list of backbones (valid: "
                                              + ", ".join(list_backbones()) + ")")
    width: float = setting(0.25, flag="--width", kind="number>0", group=SPACE,
                           help="channel multiplier of the searched net (SEDONA's)")
    min_blocks: int = setting(2, flag="--min-blocks", kind="int>=1", group=SPACE,
                              help="smallest K")
    max_blocks: int = setting(4, flag="--max-blocks", kind="int>=1", group=SPACE,
                              help="largest K")
    min_units: int = setting(1, flag="--min-units", kind="int>=1", group=SPACE,
                             help="units per block")  # smallest number of units in a block
    heads: tuple[str, ...] = setting(
        ("linear", "conv", "mlp_sr", "ir", "downstream", "pool_linear"), flag="--heads",
        kind="names", group=SPACE, help="aux head families to try")
    head_widths: tuple[float, ...] = (0.5, 1.0, 2.0)
    losses: tuple[LocalLoss, ...] = setting(("pred", "predsim", "infopro"), flag="--losses",
                                            kind="names", group=SPACE,
                                            help="local losses to try")
    # Every head's own layers get at least this many channels (narrow stages: ResNet-18 at
    # width 0.25 starts at 16 channels). A setting of the space, not a parameter.
    head_min_channels: int = setting(32, before=0)
    # AugLocal's pyramid: > 0 makes downstream heads' depth fall linearly from aux_0_depth at
    # the first block to aux_0_depth * (1 - pyramid) at the last aux block.
    pyramid: float = setting(0.0, before=0.0)
    # One head design for every block (PredSim's and InfoPro's nets), or one each: "draw"
    # lets each trial's tied_heads parameter decide, "tied" and "free" fix it.
    heads_tied: HeadTying = setting(
        "draw", flag="--heads-tied", kind="choice", before="free", group=SPACE,
        help="one head design for every block, one each, or drawn per trial")
    # How every trial and BP are trained: random crop and flip of the training batches, and the
    # learning-rate schedule (cosine: warm-up + cosine; onecycle: torch's OneCycleLR). Short
    # trials do better without augmentation and with one-cycle, BP and block-wise alike
    # (benchmarks/setup_study.py; docs/results.md "setup-study"), and augmentation costs
    # block-wise more. These differ from TrainPlan's full-training defaults on purpose (its
    # docstring says why).
    augment: bool = setting(False, flag="--augment", kind="bool", before=True, group=SPACE,
                            help="random crop and flip of training batches, for every trial "
                                 "and BP")
    lr_schedule: LrSchedule = setting(
        "onecycle", flag="--lr-schedule", kind="choice", before="cosine", group=SPACE,
        help="warm-up + cosine, or one-cycle, for every trial and BP")
    lr: tuple[float, float] = (0.01, 0.2)
    lr_mult: tuple[float, float] = (0.5, 2.0)
    weight_decay: tuple[float, float] = (1e-5, 1e-3)
    optimizer: Optimizer = "sgd"
    # Constraints (None: none): samples that break one are rejected before training.
    min_speedup: float | None = setting(
        None, flag="--min-speedup", kind="number>0", optional=True, group=CONSTRAINTS,
        metavar="S", help="least speed-up over end-to-end BP (BP's step / the slowest block's)")
    max_memory: float | None = setting(
        None, flag="--max-memory", kind="fraction", optional=True, group=CONSTRAINTS,
        metavar="R", help="most peak saved activations, as a fraction of BP's, in (0, 1]")
    # Under constraints: "feasible" moves a drawn cut set that breaks one to the nearest that
    # meets them with the drawn heads (search.trial.placement), so few samples are rejected;
    # "as-drawn" rejects it.
    cut_placement: Placement = setting(
        "feasible", flag="--cut-placement", kind="choice", before="as-drawn",
        group=CONSTRAINTS, help="a drawn cut set that breaks a constraint moves to the nearest "
                                "feasible one for its heads, or is rejected")

    def __post_init__(self) -> None:
        self._check_blocks()
        self._check_heads()
        p = self.pyramid
        if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1):
            _fail("pyramid", f"{quote(p)} must be in [0, 1) (0: no pyramid)")
        if not isinstance(self.augment, bool):
            _fail("augment", f"{quote(self.augment)} must be true or false")
        for name, kind in (("heads_tied", HeadTying), ("cut_placement", Placement),
                           ("lr_schedule", LrSchedule)):
            if getattr(self, name) not in get_args(kind):
                _fail(name, f"{quote(getattr(self, name))} not one of "
                      f"{', '.join(get_args(kind))}")
        for name in ("lr", "lr_mult", "weight_decay"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi and math.isfinite(hi)):
                _fail(name, f"range [{lo}, {hi}] must satisfy 0 < low <= high")
        if self.lr[1] * self.lr_mult[1] > MAX_LR:
            _fail("lr", f"lr {self.lr[1]} x lr_mult {self.lr_mult[1]} exceeds {MAX_LR:g}")
        BlockOptim(lr=self.lr[0] * self.lr_mult[0], optimizer=self.optimizer)
        Decoupling.uniform(self.backbones[0], k=2, width=self.width)
        self._check_constraint("min_speedup")
        self._check_constraint("max_memory")

    def _check_blocks(self) -> None:
        if not self.backbones:
            _fail("backbones", "needs at least one backbone")
        fewest = min(get_backbone(b).num_units for b in self.backbones)
        if not 1 <= self.min_units:
            _fail("min_units", f"{self.min_units} must be >= 1")
        most = fewest // self.min_units
        if not 2 <= self.min_blocks <= self.max_blocks:
            _fail("min_blocks", f"need 2 <= min_blocks ({self.min_blocks}) <= max_blocks "
                  f"({self.max_blocks})")
        if self.max_blocks > most:
            _fail("max_blocks", f"{self.max_blocks} blocks of >= {self.min_units} unit(s) do not "
                  f"fit; {min(self.backbones, key=lambda b: get_backbone(b).num_units)} has "
                  f"{fewest} units, so at most {most}")

    def _check_heads(self) -> None:
        for h in self.heads:
            AuxSpec(h)  # unknown names list the valid ones
        if not self.heads or not self.head_widths or not self.losses:
            _fail("heads", "heads, head_widths and losses each need at least one entry")
        for w in self.head_widths:
            AuxSpec("conv", width=w)
        AuxSpec(min_channels=self.head_min_channels)
        for loss in self.losses:
            if loss not in LOCAL_LOSSES:
                _fail("losses", f"unknown local loss {quote(loss)}; valid: "
                      f"{', '.join(LOCAL_LOSSES)}")

    def _check_constraint(self, name: str) -> None:
        v = getattr(self, name)
        if v is None:
            return
        why = check("number>0" if name == "min_speedup" else "fraction", v, shown=quote(v))
        if why is not None:
            _fail(name, why)
        object.__setattr__(self, name, float(v))  # 2 and 2.0 are one setting of a study

    @property
    def max_depth(self) -> int:
        return max(AUX_HEADS.get(h).max_searched_depth for h in self.heads)

    @property
    def middle_weight_decay(self) -> float:
        """The weight decay of the baselines: the usual 5e-4 when the space allows it, else the
        geometric middle of the space's (log-scale) range."""
        lo, hi = self.weight_decay
        usual = BlockOptim().weight_decay
        return usual if lo <= usual <= hi else math.sqrt(lo * hi)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], where: str = "space") -> SearchSpace:
        names = {f.name for f in fields(cls)}
        unknown = [k for k in raw if k not in names]
        if unknown:
            raise ConfigError(f"{where}: unknown key {quote(unknown[0])}; "
                              f"valid: {', '.join(sorted(names))}")
        return cls(**typed(cls, raw, where))

    @classmethod
    def file_fields(cls, path: Path) -> frozenset[str]:
        """The fields a space file sets (read after ``from_file`` accepted it)."""
        return frozenset(cls._read(path))

    @classmethod
    def from_file(cls, path: Path) -> SearchSpace:
        """A YAML or JSON file whose keys are this class's fields."""
        return cls.from_mapping(cls._read(path), where=f"--space {path}")

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        where = f"--space {path}"
        text = read_small(path, where)
        try:
            if path.suffix.lower() == ".json":
                raw = load_json(text, where)
            else:
                raw = load_yaml(text, where)
        except ConfigError:
            raise
        except Exception as e:  # json.JSONDecodeError, yaml.YAMLError, RecursionError
            msg = " ".join(str(e).split())[:200]
            kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
            raise ConfigError(f"--space {path}: not valid {kind} ({msg})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"--space {path}: expected a mapping of space fields")
        return raw


def fit_to_networks(fields: dict[str, Any], given: frozenset[str] | set[str]
                    ) -> dict[str, Any]:
    """A space's fields fitted to the named networks among its backbones (``torchvision:``,
    ``py:``): width 1 where none was given (a named network is built as its builder makes
    it), and the head families and local losses that cannot sit on some unit of one dropped,
    each with a line in the log saying why."""
    nets = [b for b in fields["backbones"] if is_named(b)]
    if not nets:
        return fields
    fields = dict(fields)
    if "width" not in given:
        fields["width"] = 1.0
    for b in nets:
        spec = get_backbone(b)
        spec.check_width(fields["width"])
        units = range(spec.num_units - 1)
        for key, refuse in (("heads", lambda f, u: spec.refusal(f, "pred", u)),
                            ("losses", lambda f, u: spec.refusal("linear", f, u))):
            for item in fields[key]:
                why = next(filter(None, (refuse(item, u) for u in units)), None)
                if why is not None:
                    fields[key] = tuple(x for x in fields[key] if x != item)
                    log.info("%s: %s; not proposed", b, why)
    return fields
