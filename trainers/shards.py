"""Checkpoints of a distributed run: one shard per rank and a manifest that makes them one.

After epoch e every rank writes its blocks' snapshot (``checkpoint.snapshot`` over its block
range) to ``checkpoint-e{e}-r{rank}.pt``, atomically. Only when every rank has written its
shard does rank 0 write ``checkpoint.json`` naming epoch e; only after that do the ranks delete
their shards of earlier epochs. A kill at any moment leaves the manifest naming an epoch whose
shards all exist: a checkpoint is complete or absent. On several machines each machine holds
its own ranks' shards under the same --out path and rank 0's machine holds the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bwbpf.spaces import UserError
from bwbpf.spaces.files import write_json_atomic
from bwbpf.trainers.checkpoint import load_checkpoint, save_checkpoint
from bwbpf.trainers.group import Group

MANIFEST = "checkpoint.json"
FORMAT = 1


def shard_name(epoch: int, rank: int) -> str:
    return f"checkpoint-e{epoch}-r{rank}.pt"


class Shards:
    """The checkpoint folder of one distributed run, seen from one rank."""

    def __init__(self, folder: Path, group: Group) -> None:
        self.folder, self.group = folder, group

    def save(self, state: dict[str, Any]) -> None:
        """Writes this rank's shard of ``state``; returns once the manifest names it."""
        epoch, g = int(state["epoch"]), self.group
        save_checkpoint({**state, "blocks": [g.blocks.start, g.blocks.stop]},
                        self.folder / shard_name(epoch, g.rank))
        g.all_sum(torch.zeros(1, device=g.device))  # every shard of epoch e is on disk
        if g.first:
            write_json_atomic(self.folder / MANIFEST, {
                "format": FORMAT, "epoch": epoch, "ranks": g.world,
                "blocks": [[r.start, r.stop] for r in g.ranges],
                "shards": [shard_name(epoch, r) for r in range(g.world)]})
        g.all_sum(torch.zeros(1, device=g.device))  # the manifest names epoch e
        for old in self.folder.glob(f"checkpoint-e*-r{g.rank}.pt"):
            if old.name != shard_name(epoch, g.rank):
                old.unlink(missing_ok=True)

    def load(self) -> dict[str, Any] | None:
        """This rank's shard of the epoch the manifest names (None: no checkpoint yet). A
        manifest of another number of ranks or other blocks per rank is a UserError."""
        g = self.group
        manifest = g.share("manifest", lambda: self._manifest())
        if manifest is None:
            return None
        text = ",".join(str(b - a) for a, b in manifest["blocks"])
        if manifest["ranks"] != g.world:
            raise UserError(f"--resume: {self.folder} was written by {manifest['ranks']} ranks, "
                            f"not {g.world}; launch {manifest['ranks']} (torchrun "
                            f"--nproc-per-node {manifest['ranks']}, or --nproc "
                            f"{manifest['ranks']})")
        if [[r.start, r.stop] for r in g.ranges] != manifest["blocks"]:
            raise UserError(f"--resume: {self.folder} was written with {text} blocks per rank; "
                            f"pass --blocks-per-rank {text}")
        path = self.folder / shard_name(int(manifest["epoch"]), g.rank)
        if not path.is_file():
            raise UserError(f"--resume: {path} is missing (rank {g.rank}'s part of the "
                            f"checkpoint of epoch {manifest['epoch']})")
        return load_checkpoint(path)

    def _manifest(self) -> dict[str, Any] | None:
        return read_manifest(self.folder)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not all(
            k in doc for k in ("epoch", "ranks", "blocks", "shards")):
        raise UserError(f"{path} is not a bwbpf-search checkpoint manifest")
    return doc


def merged_weights(folder: Path) -> dict[str, Tensor]:
    """The whole net's state_dict from the shards the manifest names (all on one machine),
    e.g. to compare with a single-process run or to use the trained net."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(f"{folder} holds no complete distributed checkpoint ({MANIFEST})")
    out: dict[str, Tensor] = {}
    for name in manifest["shards"]:
        out.update(load_checkpoint(folder / name)["net"])
    return out
