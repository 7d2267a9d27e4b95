"""Full training of one decoupling (and optionally the BP baseline) with results on disk."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bwbpf.spaces import BlockOptim, Decoupling, UserError, build
from bwbpf.trainers import Data, EpochMetrics, TrainPlan, evaluate, fit, measure_cost

log = logging.getLogger("bwbpf.search")


def write_json_atomic(path: Path, payload: Any) -> None:
    """Writes to a temporary file in the same folder, then renames: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train_one(decoupling: Decoupling, data: Data, plan: TrainPlan, label: str) -> dict[str, Any]:
    """Trains from scratch (seeded), then scores every head on the test split."""
    net = build(decoupling, data.num_classes, data.in_channels, data.image_size, seed=plan.seed)
    cost = measure_cost(net, data.in_channels, data.image_size)

    def report(epoch: int, m: EpochMetrics) -> None:
        blocks = " ".join(f"{a:.3f}" for a in m.block_val_accuracy)
        log.info("%s epoch %d/%d: val %.4f (blocks %s) %.0f img/s", label, epoch, plan.epochs,
                 m.val_accuracy, blocks, m.images_per_second)

    result = fit(net, data, plan, on_epoch=report)
    test = evaluate(net, data.test, plan)
    return {
        "decoupling": decoupling.to_dict(),
        "test_accuracy": test[-1],
        "block_test_accuracy": test,
        "val_accuracy": result.val_accuracy,
        "history": [asdict(m) for m in result.history],
        "train_seconds": result.train_seconds,
        "images_per_second": result.images_per_second,
        "ideal_speedup": cost.ideal_speedup,
        "block_flops": cost.block_flops,
        "peak_saved_bytes_per_image": cost.peak_saved_bytes,
        "backprop_saved_bytes_per_image": cost.backprop_saved_bytes,
        "device": result.device,
        "peak_memory_bytes": result.peak_memory_bytes,
    }


def builtin_decoupling(arch: str, backbone: str, width: float, optim: BlockOptim) -> Decoupling:
    if arch == "paper":
        return Decoupling.paper_default(backbone, width=width, optim=optim)
    if arch == "uniform":
        return Decoupling.uniform(backbone, width=width, optim=optim)
    path = Path(arch)
    if not path.is_file():
        raise UserError(f"--arch {arch}: not 'paper', 'uniform' or an existing JSON file")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--arch {arch}: not valid JSON ({e})") from None
    d = Decoupling.from_dict(raw.get("decoupling", raw) if isinstance(raw, dict) else raw)
    return d
