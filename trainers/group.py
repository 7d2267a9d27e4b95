"""The process group of a distributed run: who this rank is, which blocks it owns, and how a
failure anywhere ends every rank with one line.

A launcher (``torchrun``, or ``bwbpf-search train --nproc K``) starts one process per rank and
tells it RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. The ranks meet in a
TCPStore at MASTER_ADDR:MASTER_PORT (hosted by the launcher when it says so, by rank 0
otherwise), then open a Gloo (CPU) or NCCL (CUDA) process group over it.

Faults. A rank that raises writes its one line into the store (first writer wins) before it
leaves; its neighbours, whose waits then fail, find the line there and leave quietly. A rank
that dies without a word (SIGKILL) closes its sockets, and the neighbour whose send or receive
fails names it. Every wait is bounded by the process group's timeout, so a rank that hangs stops
the others too.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any, Callable, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from bwbpf.spaces import UserError
from bwbpf.trainers.device import resolve_device

LAUNCH = ("torchrun --nproc-per-node K -m bwbpf.search train ... --schedule distributed, "
          "or bwbpf-search train ... --schedule distributed --nproc K")
START_S = 1800  # seconds the other ranks wait for rank 0 to load the data (it may download it)
REASON_S = 2.0  # seconds a rank that lost a peer waits for the peer's own line to appear
STOP = "stop"  # store key: the one line that says why the run stopped


class RankStop(Exception):
    """This rank stops: ``line`` is printed (None: another rank printed why), exit ``code``."""

    def __init__(self, code: int, line: str | None) -> None:
        super().__init__(line or "stopped")
        self.code, self.line = code, line


class PeerLost(RuntimeError):
    """A send, receive or collective failed: ``peer`` (None: not known) closed its connection
    or did not answer within the timeout."""

    def __init__(self, peer: int | None, detail: str) -> None:
        super().__init__(detail)
        self.peer = peer


class RankTerminated(BaseException):
    """SIGTERM: the launcher stops this rank (torchrun does when another rank failed)."""


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as a launcher sets them; a UserError saying how to launch
    when they are absent."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env or "MASTER_ADDR" not in env:
        raise UserError(f"--schedule distributed runs one process per rank; launch it with "
                        f"{LAUNCH}")
    try:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets "
                        "them)") from None


def check_world(world: int, blocks: int, blocks_per_rank: tuple[int, ...] | None) -> None:
    """Refuses a world size no plan fits: more ranks than blocks, or a --blocks-per-rank that
    does not match the ranks and blocks."""
    if world > blocks:
        raise UserError(f"{world} ranks but the decoupling has {blocks} blocks: every rank "
                        f"needs a block; launch at most {blocks}")
    if blocks_per_rank is None:
        return
    text = ",".join(map(str, blocks_per_rank))
    if len(blocks_per_rank) != world:
        raise UserError(f"--blocks-per-rank {text} gives blocks to {len(blocks_per_rank)} "
                        f"ranks, but {world} were launched")
    if min(blocks_per_rank) < 1:
        raise UserError(f"--blocks-per-rank {text} gives a rank no block")
    if sum(blocks_per_rank) != blocks:
        raise UserError(f"--blocks-per-rank {text} places {sum(blocks_per_rank)} blocks; the "
                        f"decoupling has {blocks}")


def ranges_of(blocks_per_rank: tuple[int, ...]) -> list[range]:
    """Blocks per rank -> each rank's contiguous block range."""
    out, a = [], 0
    for n in blocks_per_rank:
        out.append(range(a, a + n))
        a += n
    return out


@dataclass
class Group:
    rank: int
    world: int
    device: torch.device
    store: dist.Store
    ranges: tuple[range, ...] = ()  # every rank's blocks, set once the net is known

    @property
    def blocks(self) -> range:
        return self.ranges[self.rank]

    @property
    def first(self) -> bool:
        return self.rank == 0

    @property
    def last(self) -> bool:
        return self.rank == self.world - 1

    def share(self, key: str, make: Callable[[], Any]) -> Any:
        """Rank 0's ``make()`` (a JSON value) on every rank. When rank 0 fails, it says why
        itself; the other ranks stop quietly with the same exit status."""
        if self.first:
            try:
                value = make()
            except BaseException as e:
                self.store.set(key, json.dumps({"error": 2 if isinstance(e, UserError) else 1}))
                raise
            self.store.set(key, json.dumps({"value": value}))
            return value
        got = json.loads(self.store.get(key))
        if "error" in got:
            raise RankStop(int(got["error"]), None)
        return got["value"]

    def publish(self, key: str, value: Any) -> None:
        self.store.set(f"{key}/{self.rank}", json.dumps(value))

    def read(self, key: str, rank: int) -> Any:
        return json.loads(self.store.get(f"{key}/{rank}"))

    def all_sum(self, t: Tensor) -> Tensor:
        """Sums ``t`` over the ranks, in place; a lost rank is a PeerLost."""
        try:
            dist.all_reduce(t)
        except RuntimeError as e:
            raise PeerLost(None, first_line(e)) from None
        return t

    def stop(self, error: BaseException, where: str) -> RankStop:
        """The RankStop that ends this rank after ``error``: with the run's one line when this
        rank is the first to tell why, quiet otherwise. ``where`` says where the last complete
        checkpoint is."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # we are leaving already
        if isinstance(error, (PeerLost, RankTerminated)):
            if self._reason(REASON_S) is not None:
                return RankStop(143 if isinstance(error, RankTerminated) else 1, None)
            if isinstance(error, RankTerminated):
                code, line = 143, f"rank {self.rank} stopped by SIGTERM"
            else:
                who = "a rank" if error.peer is None else f"rank {error.peer}"
                code, line = 1, f"{who} was lost ({error}); {where}"
        elif isinstance(error, KeyboardInterrupt):
            code, line = 130, "interrupted"
        elif isinstance(error, (UserError, RankStop)):
            code, line = 2 if isinstance(error, UserError) else error.code, str(error)
        else:
            code, line = 1, f"rank {self.rank}: {type(error).__name__}: {first_line(error)}"
        return RankStop(code, line if self._claim(line) else None)

    def _claim(self, line: str) -> bool:
        """True when this rank is the first to say why the run stopped (or the store is gone,
        when nobody can tell: then every rank says it)."""
        # Tagged with the rank: ranks that fail alike (a resume that does not fit every rank)
        # write the same line, and each would read its own text back as a win.
        mine = f"rank {self.rank}: {line}"
        try:
            self.store.set_timeout(timedelta(seconds=10))
            return self.store.compare_set(STOP, "", mine) == mine.encode()
        except RuntimeError:
            return True

    def _reason(self, wait_s: float) -> str | None:
        """The line another rank (or the launcher) wrote, waiting up to ``wait_s`` for it. It
        polls: a timed-out store wait would log a C++ warning of its own."""
        end = time.monotonic() + wait_s
        try:
            self.store.set_timeout(timedelta(seconds=10))
            while not self.store.check([STOP]):
                if time.monotonic() > end:
                    return None
                time.sleep(0.05)
            return self.store.get(STOP).decode()
        except RuntimeError:  # the store is gone
            return None

    def leave(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def join_group(device: str, timeout_s: float) -> Group:
    """Joins the process group the launcher set up; ``device`` is cpu, cuda or auto (each rank
    takes cuda:LOCAL_RANK). A rank that gets SIGTERM leaves through ``Group.stop``."""
    rank, world, local = launch_env()
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        try:
            resolve_device(str(dev))
        except UserError as e:  # fewer GPUs than ranks on this machine: this rank says so
            raise RankStop(2, f"rank {rank}: {e}") from None
        torch.cuda.set_device(dev)
    env = os.environ
    addr, port = env["MASTER_ADDR"], int(env.get("MASTER_PORT", "29500"))
    # torchrun (and --nproc) host the store in the launcher, which outlives every rank;
    # launched by hand, rank 0 hosts it.
    hosted = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    try:
        base = dist.TCPStore(addr, port, world, is_master=rank == 0 and not hosted,
                             timeout=timedelta(seconds=START_S), wait_for_workers=False)
        store = dist.PrefixStore(store_prefix(), base)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", store=store,
                                rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:  # each rank says it: it may be this rank's alone
        raise RankStop(2, f"rank {rank}: cannot join the process group at {addr}:{port} "
                          f"({first_line(e)})") from None
    signal.signal(signal.SIGTERM, _terminated)
    global _joined
    _joined = True
    return Group(rank, world, dev, store)


_joined = False  # whether this process joined a process group (it is a rank)


def joined() -> bool:
    return _joined


def end_rank(code: int) -> NoReturn:
    """Ends a rank's process now, without Python's finalisation.

    Gloo's worker threads outlive ``destroy_process_group`` here (its groups stay referenced
    from C++ after point-to-point sends), and each releases a finished collective's tensors on
    its own thread, a moment after the caller's ``wait`` returned. One that does so while the
    interpreter finalises must take the GIL; Python ends that thread, and the forced unwind
    through a C++ destructor is ``std::terminate``: SIGABRT after a run that succeeded (seen
    in about 1 of 20 resumed runs; a core's backtrace shows ``~AsyncAllreduceWork`` in
    ``ProcessGroupGloo::runLoop`` against ``Py_FinalizeEx``). Every file a run writes is
    written atomically before this point, so skipping the finaliser loses nothing; the
    standard streams and log handlers are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)


def store_prefix() -> str:
    """This run's keys in the store (a torchrun restart is a new run)."""
    return f"bwbpf/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise RankTerminated


def first_line(e: BaseException) -> str:
    """An error's first line without torch's "[file.cc:123] " prefix."""
    text = str(e).strip().split("\n")[0]
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". This is typically")[0]
