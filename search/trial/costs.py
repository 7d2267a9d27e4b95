"""What a trial costs against end-to-end BP, known before it trains.

Two figures of the speed-up (BP's step / the slowest block's step):

- *measured* (``--cost-model measured``, the default): predicted from step times of the
  net's pieces, timed once per study on its device and thread count (trainers.timing). The
  times are kept in the study (``StudyTimes``), so a resumed study or a second worker reuses
  them and every trial is judged on the same figures;
- *FLOPs* (trainers.cost): counted, exact and machine-independent, but blind to memory-bound
  layers and per-operation overhead. Always recorded and shown beside the measured figure;
  the objective and the constraints use it under ``--cost-model flops``.

The memory ratio is always counted (saved bytes are exact).
"""

from __future__ import annotations

from typing import Any, Iterator, MutableMapping, cast

import optuna
import torch

from bwbpf.reports import optuna_api
from bwbpf.reports.attr_readers import STEP_SECONDS, step_times
from bwbpf.reports.record import MB, TrialRecord
from bwbpf.search.study.settings import SearchSettings
from bwbpf.spaces import Decoupling
from bwbpf.spaces.limits import CostModel, Limits
from bwbpf.trainers import Data, NetCost, resolve_device
from bwbpf.trainers.timing import StepTimer, StepTimes


class StudyTimes(MutableMapping[str, float]):
    """A study's measured step times, one system attribute per piece, written once. A piece
    missing here is looked up in the storage again before it is timed: another worker may
    have timed it meanwhile, and then its figure is the one used."""

    def __init__(self, study: optuna.Study, seed: dict[str, float] | None = None) -> None:
        self.storage = optuna_api.storage_of(study)
        self.study_id = optuna_api.study_id(study)
        self.local: dict[str, float] = {}
        self._refresh()
        for key, value in (seed or {}).items():  # timed before the study was opened
            if key not in self.local:
                self[key] = value

    def _refresh(self) -> None:
        # through the typed reader: a stored time that is not one is refused, never used
        self.local.update(step_times(self.storage, self.study_id))

    def __getitem__(self, key: str) -> float:
        if key not in self.local:
            self._refresh()
        return self.local[key]

    def __setitem__(self, key: str, value: float) -> None:
        self.local[key] = value
        self.storage.set_study_system_attr(self.study_id, STEP_SECONDS + key, value)

    def __delitem__(self, key: str) -> None:
        raise TypeError("measured step times are kept for the study's life")

    def __iter__(self) -> Iterator[str]:
        return iter(self.local)

    def __len__(self) -> int:
        return len(self.local)


def step_timer(s: SearchSettings, data: Data) -> StepTimer | None:
    """The study's timer (None under ``--cost-model flops``), with an in-memory cache until
    ``attach`` gives it the study's."""
    if s.cost_model != "measured":
        return None
    return StepTimer(resolve_device(s.device), data.batch_size_for(s.batch_size),
                     in_channels=data.in_channels,
                     image_size=data.image_size, num_classes=data.num_classes)


def attach(timer: StepTimer | None, study: optuna.Study) -> None:
    """From now on the timer reads and writes the study's times; what it timed before the
    study was opened is stored there, unless the study already holds a figure for it."""
    if timer is not None and not isinstance(timer.cache, StudyTimes):
        timer.cache = StudyTimes(study, seed=dict(timer.cache))


def cost_record(cost: NetCost, times: StepTimes | None, batch_size: int) -> TrialRecord:
    """Costs known before training: they are objectives, and shown for every trial. With
    measured times, ``speedup`` and ``compute_overhead`` are theirs; FLOPs' speed-up is kept
    as ``speedup_flops`` either way."""
    speedup = cost.speedup if times is None else times.speedup
    overhead = cost.compute_overhead if times is None else times.compute_overhead
    return TrialRecord(
        block_flops=tuple(cost.block_flops), block_params=tuple(cost.block_params),
        speedup=round(speedup, 4), speedup_flops=round(cost.speedup, 4),
        compute_overhead=round(overhead, 4), memory_ratio=round(cost.memory_ratio, 4),
        block_seconds=() if times is None else tuple(round(t, 6) for t in times.block_seconds),
        backprop_seconds=None if times is None else round(times.backprop_seconds, 6),
        peak_activation_mb=round(cost.peak_saved_bytes * batch_size / MB, 3),
        backprop_activation_mb=round(cost.backprop_saved_bytes * batch_size / MB, 3))


def run_costs(d: Decoupling, cost: NetCost, cost_model: CostModel, *, device: torch.device,
              batch: int, in_channels: int, image_size: tuple[int, int], num_classes: int
              ) -> dict[str, Any]:
    """A `train` run's costs, the same figures a trial records (``cost_record``): ``speedup``
    by ``cost_model`` (step times of the net's pieces measured here, or FLOPs), FLOPs' beside
    it as ``speedup_flops``, and the cost model named. BP itself (one block) is 1x by both."""
    times = None
    if cost_model == "measured" and d.num_blocks > 1:
        timer = StepTimer(device, batch, in_channels=in_channels, image_size=image_size,
                          num_classes=num_classes)
        times = timer.predict(d)
    rec = cost_record(cost, times, batch)
    return {"speedup": rec.speedup, "speedup_flops": rec.speedup_flops,
            "cost_model": cost_model, "compute_overhead": rec.compute_overhead,
            "memory_ratio": rec.memory_ratio, "block_flops": list(cost.block_flops),
            **({"block_seconds": list(rec.block_seconds),
                "backprop_seconds": rec.backprop_seconds} if times is not None else {}),
            "peak_activation_mb": rec.peak_activation_mb,
            "backprop_activation_mb": rec.backprop_activation_mb}


def run_cost_model(given: CostModel | None, doc: dict[str, Any] | None) -> CostModel:
    """What a `train` run's speed-up is judged by: --cost-model, else the document's (its
    constraints', else its metrics': its trial's figure), else the search's default. A
    document from before its metrics named one was measured exactly when they hold step
    times."""
    if given:
        return given
    limits = Limits.of(doc) if doc is not None else Limits()
    if limits.any:
        return limits.cost_model
    metrics = (doc or {}).get("metrics") or {}
    if metrics.get("cost_model") in ("measured", "flops"):
        return cast(CostModel, metrics["cost_model"])
    if "speedup" in metrics:
        return "measured" if "block_seconds" in metrics else "flops"
    return cast(CostModel, SearchSettings.cost_model)
