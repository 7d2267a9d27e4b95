"""Training state: a snapshot after every epoch, restored to resume with identical arithmetic.

A snapshot holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``; it is written atomically (temporary file, then rename).
Every way a file can fail to fit (unreadable, foreign, another network, another device) is one
UserError line naming the file and the reason.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor

from bwbpf.spaces import DecoupledNet, UserError
from bwbpf.spaces.files import write_atomic
from bwbpf.trainers.plan import EpochMetrics, TrainResult

if TYPE_CHECKING:
    from bwbpf.trainers.stepper import Stepper

FORMAT = 1
ENTRIES = ("format", "epoch", "steps", "train_seconds", "net", "optimizers", "schedules",
           "generator", "history")
SOURCE = "source"  # set by load_checkpoint (not saved): the file, for restore's messages


def snapshot(epoch: int, net: DecoupledNet, step: Stepper, gen: torch.Generator,
             result: TrainResult, blocks: range | None = None) -> dict[str, Any]:
    """The training state; with ``blocks``, only those blocks' weights, optimisers and
    schedules (one rank's shard of a distributed run, see ``trainers.shards``)."""
    ks = range(net.num_blocks) if blocks is None else blocks
    return {
        "format": FORMAT,
        "epoch": epoch,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "net": own_state(net, ks),
        "optimizers": [step.opts[k].state_dict() for k in ks],
        "optimizer_types": [type(step.opts[k]).__name__ for k in ks],
        "schedules": [step.scheds[k].state_dict() for k in ks],
        "generator": gen.get_state(),  # data order and augmentation of the epochs to come
        "history": [asdict(m) for m in result.history],
    }


def own_state(net: DecoupledNet, blocks: range) -> dict[str, Tensor]:
    """The state_dict entries of ``blocks``: their units and heads (the classifier is the
    last block's head); all of them for every block."""
    if len(blocks) == net.num_blocks:
        return net.state_dict()
    return {key: v for key, v in net.state_dict().items() if _block_of(key, net) in blocks}


def restore(state: dict[str, Any], net: DecoupledNet, step: Stepper, gen: torch.Generator,
            result: TrainResult, blocks: range | None = None) -> int:
    """Loads a snapshot into a freshly built net and stepper; returns the epochs done. A
    snapshot of another network, or from another kind of device, is a UserError. With
    ``blocks``, the snapshot holds only those blocks (a shard) and only they are loaded."""
    name = str(state.get(SOURCE, "the resume state"))
    check_entries(state, name)
    ks = range(net.num_blocks) if blocks is None else blocks
    differs = _optim_mismatch(state, step, ks) or _net_mismatch(state["net"], own_state(net, ks))
    if differs:
        raise UserError(f"{name} was written for another network ({differs})")
    if not isinstance(state["generator"], Tensor) or (
            state["generator"].shape != gen.get_state().shape):
        raise UserError(f"{name} was written on another kind of device (its random state does "
                        f"not fit a {gen.device.type} generator); resume on the device it was "
                        "written on")
    net.load_state_dict(state["net"], strict=len(ks) == net.num_blocks)
    for k, s in zip(ks, state["optimizers"]):
        step.opts[k].load_state_dict(s)
    for k, s in zip(ks, state["schedules"]):
        step.scheds[k].load_state_dict(s)
    gen.set_state(state["generator"])
    result.steps = int(state["steps"])
    result.train_seconds = float(state["train_seconds"])
    result.history = [EpochMetrics(**m) for m in state["history"]]
    if result.history:
        result.val_accuracy = result.history[-1].val_accuracy
    return int(state["epoch"])


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    write_atomic(path, lambda tmp: _save(state, tmp))


def _save(state: dict[str, Any], tmp: str) -> None:
    """Serialised in memory, then written with plain file I/O: torch's zip writer reports a
    full disk as "unexpected pos", a plain write as OSError (ENOSPC) that write_atomic turns
    into one line, leaving no partial file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    with open(tmp, "wb") as f:
        f.write(buf.getbuffer())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The snapshot in ``path`` (on the CPU), noted with where it came from."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # truncated (EOFError), foreign (RuntimeError: not a zip torch wrote, or a damaged one;
    # ValueError, KeyError from the archive's records) or unpicklable files
    except (pickle.UnpicklingError, EOFError, OSError, RuntimeError, ValueError, KeyError,
            zipfile.BadZipFile) as e:
        raise UserError(f"cannot load checkpoint {path}: {_unreadable(e)}") from None
    name = f"checkpoint {path}"
    if not isinstance(state, dict):
        raise UserError(f"{name} is not a bwbpf-search checkpoint (it holds a "
                        f"{type(state).__name__}, not a dict)")
    check_entries(state, name)
    state[SOURCE] = name
    return state


def check_entries(state: Mapping[str, Any], name: str) -> None:
    missing = [k for k in ENTRIES if k not in state]
    if missing:
        raise UserError(f"{name} is not a bwbpf-search checkpoint (no {missing[0]!r} entry)")
    if state["format"] != FORMAT:
        raise UserError(f"{name} has format {state['format']!r}; this version of bwbpf-search "
                        f"reads format {FORMAT}")


def _unreadable(e: BaseException) -> str:
    """Why torch.load failed, as one complete clause (torch's messages run to paragraphs)."""
    if isinstance(e, pickle.UnpicklingError):  # what weights_only refuses to unpickle
        return ("it holds Python objects, not only tensors, numbers, strings, lists and "
                "dicts, and is not loaded")
    if isinstance(e, EOFError):
        return "the file is empty or cut short"
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    first = _first_clause(e)
    if isinstance(e, RuntimeError) and first:  # e.g. a zip archive without its directory
        return f"the file is damaged ({first})"
    return f"not a file torch.save wrote ({type(e).__name__})"


def _first_clause(e: BaseException) -> str:
    """The first sentence of an error's first line (torch's run on with advice), without the
    "[enforce fail at file.cc:123] ." prefix of its C++ errors."""
    line = re.sub(r"^\[[^\]]*\]\s*\.?\s*", "", str(e).strip().split("\n")[0])
    return line.split(". ")[0].rstrip(".")


def _optim_mismatch(state: Mapping[str, Any], step: Stepper, blocks: range) -> str | None:
    saved, here = state["optimizers"], [step.opts[k] for k in blocks]
    if not isinstance(saved, list) or len(saved) != len(here):
        count = len(saved) if isinstance(saved, list) else "no"
        return f"{count} blocks there, {len(here)} here"
    kinds = state.get("optimizer_types")  # absent in snapshots of earlier versions
    if not isinstance(kinds, list) or len(kinds) != len(here):
        return None
    for k, kind, opt in zip(blocks, kinds, here):
        if kind != type(opt).__name__:
            return f"block {k + 1}: {kind} there, {type(opt).__name__} here"
    return None


def _net_mismatch(saved: Any, own: Mapping[str, Tensor]) -> str | None:
    """The first weight (in module order) that is missing, extra or of another shape."""
    if not isinstance(saved, Mapping):
        return "its weights are not a state dict"
    for key, mine in own.items():
        theirs = saved.get(key)
        if not isinstance(theirs, Tensor):
            return f"{_part(key)}: {key} is missing"
        if theirs.shape != mine.shape:
            return (f"{_part(key)}: {key} has shape {tuple(theirs.shape)} there, "
                    f"{tuple(mine.shape)} here")
    extra = next((k for k in saved if k not in own), None)
    return None if extra is None else f"{_part(extra)}: {extra} is not in this network"


def _block_of(key: str, net: DecoupledNet) -> int:
    """The block a state_dict key belongs to (its units or its head)."""
    first, _, rest = key.partition(".")
    if first in ("blocks", "aux_heads"):
        return int(rest.split(".")[0])
    return net.num_blocks - 1  # the classifier: the last block's head


def _part(key: str) -> str:
    """The part of the net a state_dict key belongs to: "block 2", "block 2's aux head"..."""
    first, _, rest = key.partition(".")
    index = rest.split(".")[0]
    if first in ("blocks", "aux_heads") and index.isdigit():
        return f"block {int(index) + 1}" + ("'s aux head" if first == "aux_heads" else "")
    return "the classifier" if first == "classifier" else first
