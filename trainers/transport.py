"""Point-to-point hand-over of (activations, labels) between neighbouring ranks.

A batch travels as two plain tensor messages, activations then labels (and a third, the input
images, when a later block's loss rebuilds them: ``infopro``), by ``isend``/``irecv``
(no pickling). The activations go in the sender's own memory order (NCHW, or channels_last,
which CPU kernels also produce), and the label message ends with one number saying which: the
receiver views its buffer the same way, so the next block sees the very strides the sequential
schedule would give it (CPU kernels pick their arithmetic by layout).

Both sides keep at most INFLIGHT batches outstanding, like the pipelined inbox: the sender goes
on with batch t+1 while batch t is on the wire, and the receiver has the next batches' receives
posted while it trains. Receive buffers are allocated once per shape and
reused every epoch; a batch's buffers are re-posted only after its consumer is done with them.
Both sides know the sequence of shapes in advance (the batch count and sizes follow from the
split sizes every rank knows), so no shape ever travels.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from bwbpf.trainers.group import PeerLost, first_line

INFLIGHT = 2  # batches outstanding per link (bounds memory, like the pipelined INBOX)
NCHW, CHANNELS_LAST = 0, 1  # the activations' memory order, sent after the labels


def _wait(work: dist.Work | None, peer: int) -> None:
    try:
        if work is not None:
            work.wait()
    except RuntimeError as e:  # DistBackendError: the peer closed its sockets, or timed out
        raise PeerLost(peer, first_line(e)) from None


class Outbox:
    """Sends batches to rank ``dst``; holds each batch's tensors until its sends complete."""

    def __init__(self, dst: int) -> None:
        self.dst = dst
        self.pending: deque[tuple[list[dist.Work | None], Tensor, Tensor, Tensor | None]] = (
            deque())

    def send(self, x: Tensor, y: Tensor, image: Tensor | None = None) -> None:
        last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)
        wire = x.permute(0, 2, 3, 1) if last else x.contiguous()  # memory order, no copy
        tail = torch.tensor([CHANNELS_LAST if last else NCHW], device=y.device)
        labels = torch.cat([y, tail])  # a copy: y may be a receive buffer re-posted soon
        # A copy, as the labels: the images may be a receive buffer re-posted soon.
        pixels = None if image is None else image.clone(memory_format=torch.contiguous_format)
        try:
            works = [dist.isend(wire, self.dst), dist.isend(labels, self.dst)]
            if pixels is not None:
                works.append(dist.isend(pixels, self.dst))
        except RuntimeError as e:
            raise PeerLost(self.dst, first_line(e)) from None
        self.pending.append((works, wire, labels, pixels))
        while len(self.pending) > INFLIGHT:
            self._finish()

    def flush(self) -> None:
        while self.pending:
            self._finish()

    def _finish(self) -> None:
        works = self.pending.popleft()[0]
        for w in works:
            _wait(w, self.dst)


class Inbox:
    """Receives batches from rank ``src`` into buffers kept per shape."""

    def __init__(self, src: int, device: torch.device, dtype: torch.dtype,
                 image_dims: tuple[int, ...] = ()) -> None:
        self.src, self.device, self.dtype = src, device, dtype
        self.image_dims = image_dims  # (C, H, W) of the input images, when they travel
        self.buffers: dict[tuple[int, ...], list[tuple[Tensor, Tensor, Tensor | None]]] = {}

    def stream(self, shapes: Sequence[tuple[int, ...]], images: bool = False
               ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """Yields one (x, y, images or None) per shape, in order; each is valid until the next
        is asked for. ``images``: the sender sends the input images too (training batches
        when ``image_dims`` is set). Exactly ``len(shapes)`` batches are received: a receive
        posted past them would take the next stream's first message."""
        posted: deque[tuple[list[dist.Work | None], Tensor, Tensor, Tensor | None]] = deque()
        uses: dict[tuple[int, ...], int] = {}
        todo = iter(shapes)

        def post() -> None:
            shape = next(todo, None)
            if shape is None:
                return
            n = uses.get(shape, 0)
            uses[shape] = n + 1
            x, y, img = self._slot(shape, n % INFLIGHT)
            img = img if images else None
            try:
                works = [dist.irecv(x, self.src), dist.irecv(y, self.src)]
                if img is not None:
                    works.append(dist.irecv(img, self.src))
                posted.append((works, x, y, img))
            except RuntimeError as e:
                raise PeerLost(self.src, first_line(e)) from None

        for _ in range(INFLIGHT):
            post()
        while posted:
            works, x, y, img = posted.popleft()
            for w in works:
                _wait(w, self.src)
            if int(y[-1]) == CHANNELS_LAST:  # the same bytes, seen as the sender saw them
                n, c, h, w_ = x.shape
                x = x.view(n, h, w_, c).permute(0, 3, 1, 2)
            yield x, y[:-1], img
            post()  # the buffers are free again: the consumer asked for the next batch

    def _slot(self, shape: tuple[int, ...], i: int) -> tuple[Tensor, Tensor, Tensor | None]:
        ring = self.buffers.setdefault(shape, [])
        while len(ring) <= i:
            img = (torch.empty(shape[0], *self.image_dims, device=self.device)
                   if self.image_dims else None)
            ring.append((torch.empty(shape, dtype=self.dtype, device=self.device),
                         torch.empty(shape[0] + 1, dtype=torch.long, device=self.device), img))
        return ring[i]
