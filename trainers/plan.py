"""What a training run is asked to do (TrainPlan) and what it reports (TrainResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from bwbpf.spaces import ConfigError
from bwbpf.spaces.space import LrSchedule

Schedule = Literal["sequential", "pipelined", "distributed"]
Precision = Literal["auto", "fp32", "bf16"]


def _require(ok: bool, name: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {msg}")


@dataclass(frozen=True)
class TrainPlan:
    """How one network is trained. Its defaults are those of a *full* training (`train`):
    augmentation on and warm-up + cosine, what keeps a long run from overfitting. A search's
    short trials use the space's instead (``SearchSpace.augment`` off, ``lr_schedule``
    one-cycle: both do better at a few epochs, see docs/results.md "setup-study"), and every plan
    the search makes passes them explicitly. The difference is deliberate; this is where it
    is said."""

    epochs: int = 1
    batch_size: int = 128
    max_steps: int | None = None  # stop after this many steps in all (smoke tests, benchmarks)
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    # sequential: block after block on one device. pipelined: one worker per block running
    # concurrently (threads; on CUDA each with its own stream), the same arithmetic.
    # distributed: one process per group of blocks on torch.distributed (trainers.distributed).
    schedule: Schedule = "sequential"
    devices: tuple[str, ...] = ()  # pipelined: blocks spread over these, balanced by FLOPs
    worker_threads: int | None = None  # pipelined on CPU: torch threads per worker
    # torch.compile every block and head (in place: state_dict keys stay). Compiled graphs are
    # cached by torch for the process (and on disk), so trials of one search share the cost.
    compile: bool = False
    # cosine: linear warm-up over warmup_fraction of all steps, then cosine decay to zero.
    # onecycle: torch's OneCycleLR with its defaults (lr/25 up to lr over the first 30% of the
    # steps, then cosine down to lr/2.5e5); warmup_fraction is not used.
    lr_schedule: LrSchedule = "cosine"
    warmup_fraction: float = 0.05  # of all steps, linear warm-up before the cosine decay
    label_smoothing: float = 0.0
    augment: bool = True
    # False reproduces the BWBPF public code: block outputs are not detached, so every later
    # local loss back-propagates into all earlier blocks (deep supervision, not BP-free).
    detach: bool = True
    eval_batch_size: int = 1024
    precision: Precision = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    check_every: int = 25  # steps between non-finite loss checks (each check syncs the device)

    def __post_init__(self) -> None:
        _require(isinstance(self.epochs, int) and self.epochs >= 1, "epochs",
                 f"{self.epochs!r} must be >= 1")
        _require(isinstance(self.batch_size, int) and self.batch_size >= 2, "batch_size",
                 f"{self.batch_size!r} must be >= 2 (BatchNorm needs two samples)")
        _require(self.max_steps is None or self.max_steps >= 1, "max_steps",
                 f"{self.max_steps!r} must be >= 1")
        _require(self.schedule in get_args(Schedule), "schedule",
                 f"{self.schedule!r} not one of {get_args(Schedule)}")
        _require(self.lr_schedule in get_args(LrSchedule), "lr_schedule",
                 f"{self.lr_schedule!r} not one of {get_args(LrSchedule)}")
        _require(0 <= self.warmup_fraction < 1, "warmup_fraction",
                 f"{self.warmup_fraction!r} not in [0, 1)")
        _require(0 <= self.label_smoothing < 1, "label_smoothing",
                 f"{self.label_smoothing!r} not in [0, 1)")
        _require(self.precision in get_args(Precision), "precision",
                 f"{self.precision!r} not one of {get_args(Precision)}")
        _require(self.eval_batch_size >= 1 and self.check_every >= 1, "eval_batch_size",
                 "eval_batch_size and check_every must be >= 1")
        _require(not self.devices or self.schedule == "pipelined", "devices",
                 "placing blocks on several devices needs schedule='pipelined'")
        _require(self.schedule != "distributed" or ":" not in self.device, "device",
                 f"{self.device!r}: under schedule='distributed' every rank takes its own GPU "
                 "(cuda:LOCAL_RANK); give cuda, cpu or auto")
        _require(self.worker_threads is None or self.worker_threads >= 1, "worker_threads",
                 f"{self.worker_threads!r} must be >= 1")


@dataclass
class EpochMetrics:
    epoch: int  # 1-based
    val_accuracy: float  # of the final output (the classifier after the last block)
    block_val_accuracy: list[float]  # of every block's head; the last entry is the final output
    train_loss: list[float]  # mean training loss of every block's head over the epoch
    seconds: float  # training time of the epoch (device synchronised), evaluation excluded
    images_per_second: float


@dataclass
class TrainResult:
    val_accuracy: float
    history: list[EpochMetrics] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    device: str = "cpu"
    peak_memory_bytes: int | None = None  # CUDA only: torch.cuda.max_memory_allocated

    @property
    def images_per_second(self) -> float:
        seen = sum(m.images_per_second * m.seconds for m in self.history)
        return seen / self.train_seconds if self.train_seconds > 0 else 0.0


class NonFiniteLoss(RuntimeError):
    """A block's loss became NaN or inf: the run (or trial) fails with this reason."""
