"""The search space: which decouplings a study may try (``SearchSpace``), checked when it is
made, and read from a space file. How a trial's parameters map to a decoupling is in
``bwbpf.spaces.encoding``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.decoupling import MAX_LR, AuxSpec, BlockOptim, Decoupling, Optimizer
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.losses import LOCAL_LOSSES, LocalLoss
from bwbpf.spaces.values import load_json, load_yaml, quote, read_small, typed

LrSchedule = Literal["cosine", "onecycle"]  # how trainers.optim schedules a block's lr
LR_SCHEDULES: tuple[LrSchedule, ...] = get_args(LrSchedule)


def _fail(field: str, msg: str) -> None:
    raise ConfigError(f"space.{field}: {msg}")


@dataclass(frozen=True)
class SearchSpace:
    backbones: tuple[str, ...] = ("vgg8b",)
    width: float = 0.25
    min_blocks: int = 2
    max_blocks: int = 4
    min_units: int = 1  # smallest number of units in a block
    heads: tuple[str, ...] = ("linear", "conv", "mlp_sr", "ir", "downstream", "pool_linear")
    head_widths: tuple[float, ...] = (0.5, 1.0, 2.0)
    losses: tuple[LocalLoss, ...] = ("pred", "predsim", "infopro")
    # Every head's own layers get at least this many channels (narrow stages: ResNet-18 at
    # width 0.25 starts at 16 channels). A setting of the space, not a parameter.
    head_min_channels: int = 32
    # AugLocal's pyramid: > 0 makes downstream heads' depth fall linearly from aux_0_depth at
    # the first block to aux_0_depth * (1 - pyramid) at the last aux block.
    pyramid: float = 0.0
    # How every trial and BP are trained: random crop and flip of the training batches, and the
    # learning-rate schedule (cosine: warm-up + cosine; onecycle: torch's OneCycleLR). Short
    # trials do better without augmentation and with one-cycle, BP and block-wise alike
    # (benchmarks/setup_study.py; RESULTS.md), and augmentation costs block-wise more. These
    # differ from TrainPlan's full-training defaults on purpose (its docstring says why).
    augment: bool = False
    lr_schedule: LrSchedule = "onecycle"
    lr: tuple[float, float] = (0.01, 0.2)
    lr_mult: tuple[float, float] = (0.5, 2.0)
    weight_decay: tuple[float, float] = (1e-5, 1e-3)
    optimizer: Optimizer = "sgd"
    # Constraints (None: none): samples that break one are rejected before training.
    min_speedup: float | None = None  # speed-up over end-to-end BP, > 0
    max_memory: float | None = None  # peak saved activations / BP's, in (0, 1]

    def __post_init__(self) -> None:
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
        for h in self.heads:
            AuxSpec(h)  # unknown names list the valid ones
        if not self.heads or not self.head_widths or not self.losses:
            _fail("heads", "heads, head_widths and losses each need at least one entry")
        for w in self.head_widths:
            AuxSpec("conv", width=w)
        AuxSpec(min_channels=self.head_min_channels)
        p = self.pyramid
        if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1):
            _fail("pyramid", f"{quote(p)} must be in [0, 1) (0: no pyramid)")
        if not isinstance(self.augment, bool):
            _fail("augment", f"{quote(self.augment)} must be true or false")
        if self.lr_schedule not in LR_SCHEDULES:
            _fail("lr_schedule", f"{quote(self.lr_schedule)} not one of {', '.join(LR_SCHEDULES)}")
        for loss in self.losses:
            if loss not in LOCAL_LOSSES:
                _fail("losses", f"unknown local loss {quote(loss)}; valid: "
                      f"{', '.join(LOCAL_LOSSES)}")
        for name in ("lr", "lr_mult", "weight_decay"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi and math.isfinite(hi)):
                _fail(name, f"range [{lo}, {hi}] must satisfy 0 < low <= high")
        if self.lr[1] * self.lr_mult[1] > MAX_LR:
            _fail("lr", f"lr {self.lr[1]} x lr_mult {self.lr_mult[1]} exceeds {MAX_LR:g}")
        BlockOptim(lr=self.lr[0] * self.lr_mult[0], optimizer=self.optimizer)
        Decoupling.uniform(self.backbones[0], k=2, width=self.width)
        self._check_constraint("min_speedup", "a positive number", math.inf)
        self._check_constraint("max_memory", "a fraction of BP's activation memory in (0, 1]",
                               1.0)

    def _check_constraint(self, name: str, what: str, most: float) -> None:
        v = getattr(self, name)
        if v is None:
            return
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not (number and math.isfinite(v) and 0 < v <= most):
            _fail(name, f"{quote(v)} must be {what}")
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
