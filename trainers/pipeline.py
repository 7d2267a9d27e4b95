"""The pipelined schedule: one worker per block, running concurrently.

Worker k takes (input, labels) of batch t from its inbox, trains block k on it (forward, local
loss, backward, optimiser step) and puts the *detached* output into worker k+1's bounded inbox.
Block k updates on batch t before it reads batch t+1, so every block sees exactly the inputs and
weights of the sequential schedule: the same arithmetic, and on CPU with the same thread count
the same weights, bit for bit. Workers are threads: torch ops release the GIL, so blocks run on
separate cores (on CUDA, each worker has its own stream). The first error in any worker stops
the others and is raised in the caller, and so is an error of the feed (the batch iterator,
run in the caller's thread); no thread outlives the epoch.
"""

from __future__ import annotations

import os
import queue
import threading
from contextlib import ExitStack, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import Tensor

from bwbpf.spaces import DecoupledNet
from bwbpf.spaces.heads import check_schedule
from bwbpf.trainers.cost import block_groups, measure_cost
from bwbpf.trainers.device import resolve_device
from bwbpf.trainers.plan import TrainPlan
from bwbpf.trainers.stepper import Stepper, check_finite

INBOX = 2  # batches a worker may run ahead of the next one (bounds memory)
POLL_S = 0.05  # how often a blocked worker looks whether the pipeline was stopped


class Stopped(Exception):
    """Another worker (or the feed) failed; this one leaves quietly."""


@dataclass(frozen=True)
class Pipe:
    """One epoch's pipeline: worker k's inbox ``boxes[k]``, block k's loss sum ``sums[k]`` (a
    0-d tensor on its device), and the stop signal every waiting worker and the feed poll."""

    boxes: list[queue.Queue[Any]]
    sums: list[Tensor]
    epoch: int
    done: int  # steps before this epoch (for messages and the periodic non-finite check)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def fail(self, error: BaseException) -> None:
        self.errors.append(error)
        self.stop.set()

    def get(self, k: int) -> Any:
        """The next item of worker k's inbox; raises Stopped once the pipeline is stopped."""
        while True:
            try:
                return self.boxes[k].get(timeout=POLL_S)
            except queue.Empty:
                if self.stop.is_set():
                    raise Stopped from None

    def put(self, k: int, item: Any) -> None:
        """Puts ``item`` into worker k's inbox; raises Stopped once the pipeline is stopped."""
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                self.boxes[k].put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue


def join_workers(workers: list[threading.Thread], stop: threading.Event) -> None:
    """Waits for every started worker. Interrupted while waiting (Ctrl-C), it stops them first
    and waits again, so no worker outlives the epoch."""
    started = [w for w in workers if w.ident is not None]
    try:
        for w in started:
            w.join()
    except BaseException:
        stop.set()
        for w in started:
            w.join()
        raise


def place(net: DecoupledNet, names: tuple[str, ...]) -> list[torch.device]:
    """The device of every block: contiguous groups of blocks per device, balanced by the
    blocks' training FLOPs (measured on a CPU copy)."""
    if not names:
        return [next(net.parameters()).device] * net.num_blocks
    devices = [resolve_device(n) for n in names][: net.num_blocks]
    if len(devices) == 1:
        return devices * net.num_blocks
    flops = measure_cost(net, net.in_channels, net.image_size).block_flops
    out: list[torch.device] = []
    for d, blocks in enumerate(block_groups(flops, len(devices))):
        out += [devices[d]] * len(blocks)
    return out


class PipelinedStepper(Stepper):
    def __init__(self, net: DecoupledNet, plan: TrainPlan, total_steps: int) -> None:
        if not plan.detach:
            raise ValueError("the pipelined schedule needs detached blocks (BP-free)")
        check_schedule((a.family for a in net.decoupling.aux), "pipelined")
        self.devices = place(net, plan.devices)
        super().__init__(net, plan, total_steps)
        cores = os.cpu_count() or 1
        self.threads = plan.worker_threads or max(1, cores // net.num_blocks)
        self.images = net.needs_image()  # the input images travel with the batch

    def _place_blocks(self) -> torch.device:
        for k, dev in enumerate(self.devices):
            self.net.blocks[k].to(dev)
            self.net.head(k).to(dev)
        return self.devices[0]

    def run_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], limit: int, epoch: int,
                  done: int) -> tuple[Tensor, int, int]:
        k_blocks = self.net.num_blocks
        run = Pipe([queue.Queue(maxsize=INBOX) for _ in range(k_blocks)],
                   [torch.zeros((), device=d) for d in self.devices], epoch, done)
        workers = [threading.Thread(target=self._worker, name=f"block-{k + 1}", daemon=True,
                                    args=(k, run)) for k in range(k_blocks)]
        saved_threads = torch.get_num_threads()
        cpu = self.devices[0].type == "cpu"
        fed = False
        try:
            if cpu:
                torch.set_num_threads(self.threads)
            for w in workers:
                w.start()
            seen, n = self._feed(run, batches, limit)
            fed = True
        finally:
            if not fed:  # the feed raised (augmentation, OOM, Ctrl-C): no batch will come
                run.stop.set()
            join_workers(workers, run.stop)
            if cpu:
                torch.set_num_threads(saved_threads)
        if run.errors:
            raise run.errors[0]
        return torch.stack([s.to(self.devices[0]) for s in run.sums]), seen, n

    def _feed(self, run: Pipe, batches: Iterable[tuple[Tensor, Tensor]], limit: int
              ) -> tuple[int, int]:
        """Sends at most ``limit`` batches into block 1's inbox, then the end of the epoch (passed
        down the pipeline); returns (images, batches) sent. When a worker fails, the feed stops
        early and run_epoch raises that worker's error. It runs in the caller's thread, so an
        error of the batch iterator itself propagates from here."""
        seen = n = 0
        with suppress(Stopped):
            for x, y in batches:
                run.put(0, (x, y, None, x if self.images else None))
                seen, n = seen + len(y), n + 1
                if n >= limit:
                    break
            run.put(0, None)
        return seen, n

    def _worker(self, k: int, run: Pipe) -> None:
        dev, last = self.devices[k], k == self.net.num_blocks - 1
        try:
            if dev.type == "cpu":
                torch.set_num_threads(self.threads)
            with ExitStack() as stack:
                stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
                stack.enter_context(torch.cuda.stream(stream) if stream else nullcontext())
                steps = 0
                while (item := run.get(k)) is not None:
                    out, y, image, loss = self._train(k, dev, stream, item)
                    run.sums[k] += loss
                    steps += 1
                    if (run.done + steps) % self.plan.check_every == 0:
                        check_finite(run.sums[k].reshape(1), run.epoch, run.done + steps,
                                     first_block=k)
                    if not last:
                        run.put(k + 1, (out, y, self._event(stream), image))
                check_finite(run.sums[k].reshape(1), run.epoch, run.done + steps, first_block=k)
                if not last:
                    run.put(k + 1, None)
        except Stopped:
            return
        except BaseException as e:  # any failure, Ctrl-C included, stops the whole pipeline
            run.fail(e)

    def _train(self, k: int, dev: torch.device, stream: Any, item: tuple[Any, ...]
               ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        x, y, ready, image = item
        if stream is not None and ready is not None:
            stream.wait_event(ready)  # the producer's kernels for x are done
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if image is not None:
            image = image.to(dev, non_blocking=True)
        if stream is not None:
            x.record_stream(stream)  # x came from another stream: keep it until we are done
            if image is not None:
                image.record_stream(stream)
        out, loss = self.train_block(k, x, y, dev, image)
        return out, y, image, loss

    @staticmethod
    def _event(stream: Any) -> Any:
        if stream is None:
            return None
        ev = torch.cuda.Event()
        ev.record(stream)
        return ev
