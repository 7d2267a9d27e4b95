"""SearchSettings: everything one `bwbpf-search run` is asked to do, validated up front."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from bwbpf.search.study import Pruner, Sampler, check_study_name, redact
from bwbpf.spaces import ConfigError, SearchSpace, UserError
from bwbpf.spaces.decoupling import MAX_LR
from bwbpf.trainers import TrainPlan, resolve_device
from bwbpf.trainers.plan import Schedule

DIRECTIONS = {"accuracy": "maximize", "speedup": "maximize", "memory": "minimize"}
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds in 0..2**32-1
TRAIN_EPOCHS = 10  # `train`: a full training (a search trial has SearchSettings.epochs)
CostModel = Literal["measured", "flops"]  # what the speed-up is computed from (search.costs)
# Settings that decide what a trial means; a rerun of a study must not change them.
SAME_FOR_A_STUDY = ("space", "dataset", "image_size", "train_subset", "val_size", "epochs",
                    "batch_size", "objectives", "seed", "cost_model")
# What a study stored before a setting existed meant: its value then.
BEFORE = {"cost_model": "flops"}
# The same for space fields.
SPACE_BEFORE = {"head_min_channels": 0, "pyramid": 0.0, "augment": True, "lr_schedule": "cosine"}


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise UserError(msg)


def checked_plan(**fields: Any) -> TrainPlan:
    """TrainPlan(**fields), its refusal naming the flag ("--batch-size: 1 must be >= 2 ...")."""
    try:
        return TrainPlan(**fields)
    except ConfigError as e:
        name, _, why = str(e).partition(": ")
        raise UserError(f"--{name.replace('_', '-')}: {why}") from None


@dataclass(frozen=True)
class SearchSettings:
    study: str
    storage: str
    space: SearchSpace = field(default_factory=SearchSpace)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = True
    image_size: int | None = None
    train_subset: int | None = None
    val_size: int | None = None
    epochs: int = 3  # per trial; the pruners' resource
    batch_size: int = 128
    n_trials: int = 20  # the study's total, over reruns and workers
    timeout: float | None = None  # seconds for this process
    sampler: Sampler = "tpe"
    pruner: Pruner = "hyperband"
    min_epochs: int = 1  # first epoch at which a trial may be pruned
    reduction_factor: int = 3  # successive halving / hyperband
    pruner_startup: int = 4  # median pruner: finished trials before it prunes
    objectives: tuple[str, ...] = ("accuracy",)
    device: str = "auto"
    seed: int = 0  # data split, initial weights and sampler
    baselines: bool = True  # enqueue the paper's and the uniform decoupling, run the BP sweep
    bp_lrs: tuple[float, ...] = (0.02, 0.05, 0.1)  # the BP baseline's learning-rate sweep
    heartbeat: int = 60  # seconds between heartbeats of a running trial (RDB storages)
    quiet: bool = False
    schedule: Schedule = "sequential"  # or "pipelined": trials train their blocks concurrently
    devices: tuple[str, ...] = ()  # pipelined: blocks spread over these devices
    compile: bool = False  # torch.compile blocks and heads
    cost_model: CostModel = "measured"  # speed-up from measured step times, or from FLOPs
    # After the search: the best trials, the reference trials and BP re-trained for this many
    # more seeds (search.confirm). Not part of a study's identity: a rerun may ask for more.
    confirm_top: int = 3  # 0: no confirmation
    confirm_seeds: int = 2
    # The space fields this run names (flags, --space file); a rerun of a study keeps the
    # study's value of every other (see adopt_space). None: all of them (the API's default).
    space_given: frozenset[str] | None = None

    def __post_init__(self) -> None:
        check_study_name(self.study, new=True)
        _require(self.sampler in get_args(Sampler),
                 f"--sampler {self.sampler!r}: valid: {', '.join(get_args(Sampler))}")
        _require(self.pruner in get_args(Pruner),
                 f"--pruner {self.pruner!r}: valid: {', '.join(get_args(Pruner))}")
        objs = self.objectives
        _require(bool(objs) and objs[0] == "accuracy" and len(set(objs)) == len(objs)
                 and all(o in DIRECTIONS for o in objs),
                 f"--objectives {','.join(objs)!r}: accuracy first, then any of speedup, "
                 "memory (e.g. accuracy,speedup)")
        for name in ("epochs", "batch_size", "n_trials", "min_epochs", "heartbeat",
                     "confirm_seeds"):
            v = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            _require(isinstance(v, int) and v >= 1, f"{flag}: {v!r} must be >= 1")
        _require(self.min_epochs <= self.epochs,
                 f"--min-epochs {self.min_epochs} exceeds --epochs {self.epochs}")
        _require(self.reduction_factor >= 2, f"--reduction-factor {self.reduction_factor} < 2")
        _require(isinstance(self.pruner_startup, int) and self.pruner_startup >= 0,
                 f"--pruner-startup {self.pruner_startup!r}: must be >= 0")
        _require(isinstance(self.confirm_top, int) and self.confirm_top >= 0,
                 f"--confirm-top {self.confirm_top!r}: must be >= 0 (0: no confirmation)")
        _require(isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED,
                 f"--seed {self.seed!r}: must be in 0..{MAX_SEED}")
        _require(self.timeout is None or (self.timeout > 0 and math.isfinite(self.timeout)),
                 f"--timeout {self.timeout}: must be a positive number of seconds")
        _require(bool(self.bp_lrs) and all(0 < lr <= MAX_LR for lr in self.bp_lrs),
                 f"--bp-lrs {self.bp_lrs}: learning rates in (0, {MAX_LR:g}]")
        _require(self.schedule in get_args(Schedule),
                 f"--schedule {self.schedule!r}: one of {', '.join(get_args(Schedule))}")
        _require(self.cost_model in get_args(CostModel),
                 f"--cost-model {self.cost_model!r}: one of {', '.join(get_args(CostModel))}")
        _require(not self.devices or self.schedule == "pipelined",
                 "--devices needs --schedule pipelined")
        _require(self.schedule != "distributed",
                 "--schedule distributed trains one network across processes (`train`); a "
                 "search scales out by trials: --jobs, or workers sharing a PostgreSQL storage")
        for d in self.devices:
            resolve_device(d)
        # The trainers' own rules (batch size >= 2, ...) up front: a study is never created
        # for settings whose first trial would be refused.
        checked_plan(epochs=self.epochs, batch_size=self.batch_size, seed=self.seed,
                     device=self.device, schedule=self.schedule, devices=self.devices,
                     compile=self.compile)

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[o] for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def record(self) -> dict[str, Any]:
        """JSON-able settings, stored with the study (storage password removed)."""
        out = asdict(self)
        del out["space_given"]
        out["space"] = _space_record(self.space)
        out["objectives"] = list(self.objectives)
        out["bp_lrs"] = list(self.bp_lrs)
        out["devices"] = list(self.devices)
        out["storage"] = redact(self.storage)
        return out

    def conflicts(self, stored: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """(key, the study's value, this run's) of every setting that differs from those the
        study was created with; space fields one by one ("space.min_speedup"). A space field
        added since a study was created counts as its default there."""
        mine = self.record()
        out = []
        for k in SAME_FOR_A_STUDY:
            if k not in stored and k in BEFORE:
                stored = {**stored, k: BEFORE[k]}
            if k not in stored:
                continue
            if k == "space" and isinstance(stored[k], dict):
                old = stored_space(stored[k])
                out += [(f"space.{f}", old.get(f), v) for f, v in mine[k].items()
                        if old.get(f) != v]
            elif stored[k] != mine[k]:
                out.append((k, stored[k], mine[k]))
        return out

    def adopt_space(self, stored: dict[str, Any]) -> SearchSettings:
        """These settings with the stored study's value of every space field this run does
        not name: a rerun without flags resumes a study made under other defaults (older
        versions searched fewer heads and losses). A named field that differs is still a
        conflict (see ``conflicts``)."""
        space = stored.get("space")
        if self.space_given is None or not isinstance(space, dict):
            return self
        old = stored_space(space)
        mine = _space_record(self.space)
        keep = {f: old[f] for f in mine if f not in self.space_given and f in old}
        if all(mine[f] == v for f, v in keep.items()):
            return self
        try:
            adopted = SearchSpace.from_mapping({**mine, **keep}, where="the study's space")
        except ConfigError:  # a stored space this version cannot build: conflicts() says so
            return self
        return replace(self, space=adopted)


def stored_space(record: dict[str, Any]) -> dict[str, Any]:
    """A study's stored space record, complete: a field added since the study was created
    reads as what the study meant (SPACE_BEFORE), else as its default."""
    return {**_space_record(SearchSpace()), **SPACE_BEFORE, **record}


def _space_record(space: SearchSpace) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(space).items()}
