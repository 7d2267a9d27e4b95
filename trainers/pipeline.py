"""The pipelined schedule: one worker per block, running concurrently.

Worker k takes (input, labels) of batch t from its inbox, trains block k on it (forward, local
loss, backward, optimiser step) and puts the *detached* output into worker k+1's bounded inbox.
Block k updates on batch t before it reads batch t+1, so every block sees exactly the inputs and
weights of the sequential schedule: the same arithmetic, and on CPU with the same thread count
the same weights, bit for bit. Workers are threads: torch ops release the GIL, so blocks run on
separate cores (on CUDA, each worker has its own stream). The first error in any worker stops
the others and is raised in the caller; no thread outlives the epoch.
"""

from __future__ import annotations

import os
import queue
import threading
from contextlib import ExitStack, nullcontext, suppress
from typing import Any, Iterable

import torch
from torch import Tensor

from bwbpf.spaces import DecoupledNet, balanced_cuts
from bwbpf.trainers.device import resolve_device
from bwbpf.trainers.plan import TrainPlan
from bwbpf.trainers.stepper import Stepper, check_finite

INBOX = 2  # batches a worker may run ahead of the next one (bounds memory)
POLL_S = 0.05  # how often a blocked worker looks whether the pipeline was stopped


class Stopped(Exception):
    """Another worker failed; this one leaves quietly."""


def place(net: DecoupledNet, names: tuple[str, ...]) -> list[torch.device]:
    """The device of every block: contiguous groups of blocks per device, balanced by the
    blocks' training FLOPs (measured on a CPU copy)."""
    if not names:
        return [next(net.parameters()).device] * net.num_blocks
    devices = [resolve_device(n) for n in names][: net.num_blocks]
    if len(devices) == 1:
        return devices * net.num_blocks
    from bwbpf.trainers.cost import measure_cost

    flops = measure_cost(net, net.in_channels, net.image_size).block_flops
    cuts = (0, *balanced_cuts([float(f) for f in flops], len(devices)), net.num_blocks)
    out: list[torch.device] = []
    for d, (a, b) in enumerate(zip(cuts, cuts[1:])):
        out += [devices[d]] * (b - a)
    return out


class PipelinedStepper(Stepper):
    def __init__(self, net: DecoupledNet, plan: TrainPlan, total_steps: int) -> None:
        if not plan.detach:
            raise ValueError("the pipelined schedule needs detached blocks (BP-free)")
        self.net, self.plan = net, plan
        self.devices = place(net, plan.devices)
        for k, dev in enumerate(self.devices):  # before the optimisers: they hold the params
            net.blocks[k].to(dev)
            net.head(k).to(dev)
        self.device = self.devices[0]
        self._optimisers(total_steps)
        cores = os.cpu_count() or 1
        self.threads = plan.worker_threads or max(1, cores // net.num_blocks)

    def run_epoch(self, batches: Iterable[tuple[Tensor, Tensor]], limit: int, epoch: int,
                  done: int) -> tuple[Tensor, int, int]:
        k_blocks = self.net.num_blocks
        self.stop, self.errors = threading.Event(), []  # type: ignore[var-annotated]
        boxes: list[queue.Queue[Any]] = [queue.Queue(maxsize=INBOX) for _ in range(k_blocks)]
        sums = [torch.zeros((), device=d) for d in self.devices]
        workers = [threading.Thread(target=self._worker, name=f"block-{k + 1}", daemon=True,
                                    args=(k, boxes, sums, epoch, done)) for k in range(k_blocks)]
        saved_threads = torch.get_num_threads()
        cpu = self.devices[0].type == "cpu"
        if cpu:
            torch.set_num_threads(self.threads)
        for w in workers:
            w.start()
        try:
            seen, n = self._feed(boxes[0], batches, limit)
        finally:
            if self.errors:
                self.stop.set()
            for w in workers:
                w.join()
            if cpu:
                torch.set_num_threads(saved_threads)
        if self.errors:
            raise self.errors[0]
        return torch.stack([s.to(self.devices[0]) for s in sums]), seen, n

    def _feed(self, box: queue.Queue[Any], batches: Iterable[tuple[Tensor, Tensor]],
              limit: int) -> tuple[int, int]:
        """Sends at most ``limit`` batches into block 1's inbox, then the end of the epoch (passed
        down the pipeline); returns (images, batches) sent. When a worker fails, the feed stops
        early and run_epoch raises that worker's error."""
        seen = n = 0
        with suppress(Stopped):
            for x, y in batches:
                self._put(box, (x, y, None))
                seen, n = seen + len(y), n + 1
                if n >= limit:
                    break
            self._put(box, None)
        return seen, n

    def _worker(self, k: int, boxes: list[queue.Queue[Any]], sums: list[Tensor], epoch: int,
                done: int) -> None:
        dev, last = self.devices[k], k == self.net.num_blocks - 1
        try:
            if dev.type == "cpu":
                torch.set_num_threads(self.threads)
            with ExitStack() as stack:
                stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
                stack.enter_context(torch.cuda.stream(stream) if stream else nullcontext())
                steps = 0
                while (item := self._get(boxes[k])) is not None:
                    out, y, loss = self._train(k, dev, stream, item)
                    sums[k] += loss
                    steps += 1
                    if (done + steps) % self.plan.check_every == 0:
                        check_finite(sums[k].reshape(1), epoch, done + steps, first_block=k)
                    if not last:
                        self._put(boxes[k + 1], (out, y, self._event(stream)))
                check_finite(sums[k].reshape(1), epoch, done + steps, first_block=k)
                if not last:
                    self._put(boxes[k + 1], None)
        except Stopped:
            return
        except BaseException as e:  # noqa: BLE001  (any failure stops the whole pipeline)
            self.errors.append(e)
            self.stop.set()

    def _train(self, k: int, dev: torch.device, stream: Any, item: tuple[Any, ...]
               ) -> tuple[Tensor, Tensor, Tensor]:
        x, y, ready = item
        if stream is not None and ready is not None:
            stream.wait_event(ready)  # the producer's kernels for x are done
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if stream is not None:
            x.record_stream(stream)  # x came from another stream: keep it until we are done
        out, loss = self.train_block(k, x, y, dev)
        return out, y, loss

    @staticmethod
    def _event(stream: Any) -> Any:
        if stream is None:
            return None
        ev = torch.cuda.Event()
        ev.record(stream)
        return ev

    def _get(self, box: queue.Queue[Any]) -> Any:
        while True:
            try:
                return box.get(timeout=POLL_S)
            except queue.Empty:
                if self.stop.is_set():
                    raise Stopped from None

    def _put(self, box: queue.Queue[Any], item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                box.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue
