"""`train --schedule distributed`: one rank's part of the command, and the `--nproc K`
launcher that starts K ranks on this machine as torchrun would.

Rank 0 checks --out, loads the data and shares its sizes; every rank then trains its blocks
(``search.winners.full_training.train_ranked``). The BP baseline of --compare-bp stays
single-process: rank 0 trains it after the group is closed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bwbpf.search.command_line.data_flags import load_data_from
from bwbpf.search.command_line.launch import relaunch
from bwbpf.search.winners import full_training as t
from bwbpf.search.winners import run_folder as f
from bwbpf.search.winners.run_folder import check_out
from bwbpf.search.winners.train_settings import TrainSettings
from bwbpf.spaces import Decoupling, UserError
from bwbpf.trainers import TrainPlan
from bwbpf.trainers.distributed import Sizes
from bwbpf.trainers.group import (
    STOP,
    Group,
    RankStop,
    check_world,
    join_group,
    launch_env,
    store_prefix,
)

GRACE_S = 60.0  # after one rank fails, seconds the others get to stop on their own
POLL_S = 0.1


def train_distributed(args: argparse.Namespace, d: Decoupling, out: Path,
                      settings: TrainSettings, plan: TrainPlan, bp_lr: float) -> int:
    """One rank of `train --schedule distributed`."""
    rank, world, _ = launch_env()
    try:
        check_world(world, d.num_blocks, args.blocks_per_rank)
    except UserError as e:  # the same on every rank: rank 0 says it
        raise (e if rank == 0 else RankStop(2, None)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings.with_ranks(world, args.blocks_per_rank)
    group = join_group(args.device, args.peer_timeout)
    where = (f"the last complete checkpoint stays in {out / 'blockwise'}; continue with "
             "--resume")
    try:
        return _train(args, d, out, settings, plan, bp_lr, group)
    except RankStop:
        raise
    except BaseException as e:  # every failure leaves through the one-line protocol
        raise group.stop(e, where) from None


def _train(args: argparse.Namespace, d: Decoupling, out: Path, settings: TrainSettings,
           plan: TrainPlan, bp_lr: float, group: Group) -> int:
    runs = {"blockwise": d, **({"backprop": t.bp_for(d, bp_lr)} if args.compare_bp else {})}
    data = None

    def start() -> dict[str, Any]:
        nonlocal data
        f.check_out(out, settings, resume=args.resume, force=args.force)
        data = load_data_from(args)
        t.check_fits(list(runs.values()), data)
        f.prepare_out(out, settings, resume=args.resume, force=args.force)
        return asdict(Sizes.of(data))

    shared = group.share("start", start)
    sizes = Sizes(**{**shared, "image_size": tuple(shared["image_size"])})
    r = t.train_ranked(d, data, sizes, plan, out / "blockwise", "blockwise", group,
                     args.blocks_per_rank, resume=args.resume, stop_after=args.stop_after,
                     cost_model=settings.cost_model)
    group.leave()
    if not group.first:
        return 0
    results: dict[str, dict[str, Any] | None] = {"blockwise": r}
    if r is not None and args.compare_bp:
        assert data is not None
        results["backprop"] = t.train_one(runs["backprop"], data, replace(
            plan, schedule="sequential"), out / "backprop", "backprop", resume=args.resume,
            stop_after=args.stop_after, cost_model=settings.cost_model)
    return f.finish(out, results, settings, args.stop_after)


def launch(args: argparse.Namespace, blocks: int, out: Path, settings: TrainSettings) -> int:
    """`--nproc K`: runs the same command as K ranks on this machine and waits for them. What
    can be refused without the data is refused here, before any rank starts."""
    if "RANK" in os.environ:
        raise UserError("--nproc starts the ranks itself; under torchrun leave it out")
    check_world(args.nproc, blocks, args.blocks_per_rank)
    check_out(out, settings.with_ranks(args.nproc, args.blocks_per_rank), resume=args.resume,
              force=args.force)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.nproc)
    return Ranks(rank_argv(args, threads), args.nproc, threads).wait(out)


def rank_argv(args: argparse.Namespace, threads: int) -> list[str]:
    """The command each rank runs: this one less --nproc, with --threads unless given."""
    return relaunch(args, leave_out=("nproc",),
                    then=[] if args.threads else ["--threads", str(threads)])


class Ranks:
    """K rank processes of one command, and the store they meet in, hosted here so that it
    outlives any of them (as torchrun's agent hosts it)."""

    def __init__(self, command: list[str], nproc: int, threads: int, **popen: Any) -> None:
        base = dist.TCPStore("127.0.0.1", 0, None, is_master=True, wait_for_workers=False,
                             timeout=timedelta(seconds=10))
        self.store = dist.PrefixStore(store_prefix(), base)
        self._base = base  # keeps the server alive
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(base.port),
               "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0",
               "TORCHELASTIC_USE_AGENT_STORE": "True", "OMP_NUM_THREADS": str(threads)}
        self.procs = [subprocess.Popen(command,
                                       env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                                       **popen) for r in range(nproc)]

    def wait(self, out: Path) -> int:
        """Waits for every rank; returns the run's exit status. A rank killed by a signal
        before anyone said why is named here; ranks still running GRACE_S after the first
        failure are killed."""
        deadline = None
        try:
            while [p.poll() for p in self.procs].count(None):  # poll every one: returncode
                failed = [(r, p.returncode) for r, p in enumerate(self.procs)
                          if p.returncode not in (None, 0)]
                if failed and deadline is None:
                    deadline = time.monotonic() + GRACE_S
                    self._name_lost(failed, out)
                if deadline is not None and time.monotonic() > deadline:
                    self._kill_left()
                time.sleep(POLL_S)
        except KeyboardInterrupt:  # the ranks got Ctrl-C too and say so themselves
            self._kill_left(wait_s=GRACE_S, say=False)
            raise RankStop(130, None) from None
        failed = [(r, p.returncode) for r, p in enumerate(self.procs) if p.returncode != 0]
        if deadline is None:  # every rank ended between two polls
            self._name_lost(failed, out)
        codes = {c for _, c in failed}
        return 0 if not failed else 2 if 2 in codes else 130 if 130 in codes else 1

    def _name_lost(self, failed: list[tuple[int, int]], out: Path) -> None:
        for r, code in failed:
            if code < 0:
                name = signal.Signals(-code).name
                line = (f"rank {r} was lost (killed by {name}); the other ranks stopped; the "
                        f"last complete checkpoint stays in {out / 'blockwise'}; continue "
                        "with --resume")
                with suppress(RuntimeError):  # the store is ours: it answers unless torn down
                    if self.store.compare_set(STOP, "", line) == line.encode():
                        print(f"bwbpf-search: {line}", file=sys.stderr, flush=True)
                return

    def _kill_left(self, wait_s: float = 0.0, say: bool = True) -> None:
        end = time.monotonic() + wait_s
        for r, p in enumerate(self.procs):
            with suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, end - time.monotonic()))
            if p.poll() is None:
                if say:
                    print(f"bwbpf-search: rank {r} did not stop within {GRACE_S:.0f} s of "
                          "the failure; killed it", file=sys.stderr, flush=True)
                p.kill()
                p.wait()
