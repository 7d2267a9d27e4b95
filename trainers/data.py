"""In-memory datasets on the target device, iterated by an on-device permutation.

The whole split lives as one normalised float tensor (N, C, H, W) on the device; a batch is an
index into it. Augmentation (pad + random crop, horizontal flip) runs as batched tensor ops on
the device, so there are no DataLoader workers and no host round trips.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Split:
    x: Tensor  # (N, C, H, W) float32, normalised with the training split's statistics
    y: Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Data:
    name: str
    train: Split
    val: Split  # held out of the training split with a seeded permutation; used by the search
    test: Split  # the dataset's own test split; for final numbers only
    num_classes: int
    flip: bool = True  # horizontal flip is a valid augmentation for this data
    crop_pad: int = 4  # pixels of padding for random-crop augmentation (0 = none)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])

    @property
    def device(self) -> torch.device:
        return self.train.x.device

    def to(self, device: torch.device | str) -> Data:
        return replace(self, train=self.train.to(device), val=self.val.to(device),
                       test=self.test.to(device))

    def train_batches(self, batch_size: int, generator: torch.Generator, augment: bool = True
                      ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of shuffled training batches; the last partial batch is dropped (a batch
        of one breaks BatchNorm), unless the split is smaller than one batch."""
        n = len(self.train)
        perm = torch.randperm(n, generator=generator, device=generator.device)
        bs = self.batch_size_for(batch_size)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs].to(self.device)
            x, y = self.train.x[idx], self.train.y[idx]
            if augment:
                x = augment_batch(x, generator, flip=self.flip, pad=self.crop_pad)
            yield x, y

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self.train) // self.batch_size_for(batch_size))

    def batch_size_for(self, batch_size: int) -> int:
        """The images a training batch holds: ``batch_size``, or the whole training split where
        that is smaller. Step timing and activation sizes use this figure too."""
        return min(batch_size, len(self.train))

    def batch_note(self, batch_size: int) -> str | None:
        """The line that says, once per command, that ``batch_size`` is cut to the split."""
        if batch_size <= len(self.train):
            return None
        return (f"--batch-size {batch_size}: the training split holds {len(self.train)} "
                f"images, so every batch holds those {len(self.train)}")


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for i in range(0, len(split), batch_size):
        yield split.x[i:i + batch_size], split.y[i:i + batch_size]


def augment_batch(x: Tensor, gen: torch.Generator, *, flip: bool, pad: int) -> Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, per sample."""
    n, c, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        # Advanced indexing over (N, H, W) of the channels-last view gives (N, H, W, C).
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(n, generator=gen, device=gen.device).to(x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x.contiguous()
