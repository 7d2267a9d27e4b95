"""Training state: a snapshot after every epoch, restored to resume with identical arithmetic.

A snapshot holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``; it is written atomically (temporary file, then rename).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bwbpf.spaces import DecoupledNet, UserError
from bwbpf.spaces.files import write_atomic
from bwbpf.trainers.plan import EpochMetrics, TrainResult

if TYPE_CHECKING:
    from bwbpf.trainers.stepper import Stepper

FORMAT = 1


def snapshot(epoch: int, net: DecoupledNet, step: Stepper, gen: torch.Generator,
             result: TrainResult) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "epoch": epoch,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "net": net.state_dict(),
        "optimizers": [o.state_dict() for o in step.opts],
        "schedules": [s.state_dict() for s in step.scheds],
        "generator": gen.get_state(),  # data order and augmentation of the epochs to come
        "history": [asdict(m) for m in result.history],
    }


def restore(state: dict[str, Any], net: DecoupledNet, step: Stepper, gen: torch.Generator,
            result: TrainResult) -> int:
    """Loads a snapshot into a freshly built net and stepper; returns the epochs done."""
    if state.get("format") != FORMAT or len(state["optimizers"]) != len(step.opts):
        raise UserError("checkpoint does not belong to this decoupling or this version")
    net.load_state_dict(state["net"])
    for opt, s in zip(step.opts, state["optimizers"]):
        opt.load_state_dict(s)
    for sched, s in zip(step.scheds, state["schedules"]):
        sched.load_state_dict(s)
    gen.set_state(state["generator"])
    result.steps = int(state["steps"])
    result.train_seconds = float(state["train_seconds"])
    result.history = [EpochMetrics(**m) for m in state["history"]]
    if result.history:
        result.val_accuracy = result.history[-1].val_accuracy
    return int(state["epoch"])


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or unpicklable files
        raise UserError(f"cannot load checkpoint {path}: {' '.join(str(e).split())[:160]}"
                        ) from None
    if not isinstance(state, dict) or "net" not in state:
        raise UserError(f"{path} is not a bwbpf-search checkpoint")
    return state
