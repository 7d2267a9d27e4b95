"""How a decoupled net is trained: data on the device, the BP-free trainer, costs."""

from bwbpf.trainers.blockwise import EpochCallback, evaluate, fit
from bwbpf.trainers.cost import NetCost, measure_cost, unit_costs, unit_times
from bwbpf.trainers.data import Data, Split
from bwbpf.trainers.datasets import DataError, list_datasets, load_data
from bwbpf.trainers.device import OutOfMemory, memory_guard, resolve_device
from bwbpf.trainers.plan import EpochMetrics, NonFiniteLoss, TrainPlan, TrainResult

__all__ = [
    "Data",
    "DataError",
    "EpochCallback",
    "EpochMetrics",
    "NetCost",
    "NonFiniteLoss",
    "OutOfMemory",
    "Split",
    "TrainPlan",
    "TrainResult",
    "evaluate",
    "fit",
    "list_datasets",
    "load_data",
    "measure_cost",
    "memory_guard",
    "resolve_device",
    "unit_costs",
    "unit_times",
]
