"""Device choice and the per-device numerics (bf16 autocast on CUDA; channels_last everywhere)."""

from __future__ import annotations

import contextlib
import os
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import ContextManager, Iterator, TypeVar

import torch
from torch import Tensor, nn

from bwbpf.spaces import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; an unavailable device is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto"
                        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {name}: CUDA is not available on this machine; use cpu")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {name}: only {count} CUDA device(s) (cuda:0..{count - 1})")
    elif dev.type != "cpu":
        raise UserError(f"--device {name!r}: only cpu, cuda, cuda:N and auto are supported")
    return dev


def autocast(device: torch.device, precision: str) -> ContextManager[object]:
    """bf16 autocast on CUDA unless fp32 is asked for; plain fp32 on CPU unless bf16 is."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


M = TypeVar("M", bound=nn.Module)


def nhwc(x: Tensor) -> Tensor:
    """A batch of images (or activations) in the trainers' memory order, channels_last, on
    every device: cuDNN's tensor cores want it on CUDA, and oneDNN's convolutions on CPU run
    faster in it too (batch 128, 28x28, x0.25 nets: a training step takes 0.5-0.9 of the time,
    ``benchmarks/step_cost.py``). The values, and so the results, are the same tensors."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def nhwc_module(module: M) -> M:
    """``module``'s convolution weights in channels_last, to match ``nhwc`` inputs."""
    return module.to(memory_format=torch.channels_last)


def synchronize(device: torch.device) -> None:
    """Waits for queued kernels, so wall-clock timings are honest on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``; None when it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    # MemAvailable counts reclaimable page cache, unlike SC_AVPHYS_PAGES (the fallback)
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux, or not POSIX
        return None


# ---------------------------------------------------------------- running out of memory
# One line for the user: what was being built or trained, and what to lower. A search records
# it as the trial's failure reason and goes on; a command prints it and exits 1.
def is_out_of_memory(e: BaseException) -> bool:
    """A failed allocation: torch.OutOfMemoryError (CUDA), MemoryError, or the CPU allocator's
    RuntimeError ("DefaultCPUAllocator: can't allocate memory ...")."""
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e).lower()
    return any(s in text for s in ("can't allocate memory", "out of memory"))


ADVICE = "lower --batch-size, --width or --image-size"


class OutOfMemory(RuntimeError):
    """A computation ran out of memory; the message is one line for the user."""


def oom_line(e: BaseException, what: str, advice: str = ADVICE) -> str:
    """``e`` (an out-of-memory error) as one line; the allocator's own words are cut to the
    size it asked for."""
    text = " ".join(str(e).split())
    asked = text[text.find("tried to allocate"):].split(".")[0] if "tried to allocate" in text \
        else ""
    where = "CUDA" if isinstance(e, torch.OutOfMemoryError) else "memory"
    detail = f" ({asked})" if asked else ""
    return f"out of {where} while {what}{detail}; {advice}"


@contextmanager
def memory_guard(what: str, advice: str = ADVICE) -> Iterator[None]:
    """Raises ``OutOfMemory`` naming ``what`` (e.g. "training trial 3") for any out-of-memory
    error inside; other errors pass unchanged."""
    try:
        yield
    except OutOfMemory:
        raise
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(oom_line(e, what, advice)) from None


@contextmanager
def seeded_streams(seed: int, devices: list[torch.device]) -> Iterator[None]:
    """Torch's global generators seeded with ``seed`` inside the block, and the CPU's and
    those of the CUDA ``devices`` (the ones the training uses) given back as they were after
    it: a training leaves its caller's random streams alone."""
    cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
