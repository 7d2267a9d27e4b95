"""`bwbpf-search train`: full training of one decoupling (and the BP baseline) with results,
checkpoints and per-epoch metrics on disk, resumable after a crash or a kill."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from bwbpf.spaces import BlockOptim, Decoupling, UserError, build, from_document, to_document
from bwbpf.spaces.document import parse_json
from bwbpf.spaces.files import write_json_atomic, write_text_atomic
from bwbpf.trainers import Data, EpochMetrics, TrainPlan, evaluate, fit, measure_cost
from bwbpf.trainers.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger("bwbpf.search")
MB = 2**20
RUN_FILES = ("metrics.json", "settings.json", "decoupling.json", "blockwise", "backprop")


class StopAfter(Exception):
    """Raised after the epoch --stop-after names: the run ends resumable."""


def load_arch(arch: str, backbone: str | None, width: float | None, lr: float
              ) -> tuple[Decoupling, dict[str, Any]]:
    """paper / uniform for a backbone, or an exported file (transferred to --backbone/--width
    when given); returns the decoupling and the file's metrics (empty for built-ins)."""
    if arch in ("paper", "uniform"):
        b, w = backbone or "vgg8b", width or 0.25
        make = Decoupling.paper_default if arch == "paper" else Decoupling.uniform
        return make(b, width=w, optim=BlockOptim(lr=lr)), {}
    path = Path(arch)
    if not path.is_file():
        raise UserError(f"--arch {arch}: not 'paper', 'uniform' or an existing JSON file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--arch {arch}: cannot read ({type(e).__name__})") from None
    doc = parse_json(text, f"--arch {arch}")
    try:
        d = from_document(doc)
    except UserError as e:
        raise UserError(f"--arch {arch}: {e}") from None
    if (backbone and backbone != d.backbone) or (width and width != d.width):
        d = d.transfer(backbone or d.backbone, width=width)
    return d, dict(doc.get("metrics", {}))


def prepare_out(out: Path, settings: dict[str, Any], *, resume: bool, force: bool) -> None:
    """Refuses to mix runs: a finished or different run is kept unless --force."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    stored = out / "settings.json"
    if resume and stored.is_file():
        old = json.loads(stored.read_text())
        bad = [k for k in settings if k not in ("resume", "force") and old.get(k) != settings[k]]
        if bad:
            raise UserError(f"--resume: {out} was run with {bad[0]}={old.get(bad[0])!r}, "
                            f"not {settings[bad[0]]!r}")
        return
    if any((out / f).exists() for f in RUN_FILES):
        if not force:
            what = "a finished run" if (out / "metrics.json").exists() else "an unfinished run"
            raise UserError(f"--out {out} holds {what}; pass --resume to continue it or "
                            "--force to start over")
        for f in RUN_FILES:
            p = out / f
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    write_json_atomic(stored, settings)


def train_one(d: Decoupling, data: Data, plan: TrainPlan, out: Path, label: str, *,
              resume: bool, stop_after: int | None) -> dict[str, Any] | None:
    """Trains (or resumes) into ``out``; None when stopped by --stop-after."""
    ckpt = out / "checkpoint.pt"
    state = load_checkpoint(ckpt) if resume and ckpt.is_file() else None
    net = build(d, data.num_classes, data.in_channels, data.image_size, seed=plan.seed)
    cost = measure_cost(net, data.in_channels, data.image_size)
    history: list[dict[str, Any]] = list(state["history"]) if state else []
    if state:
        log.info("%s: resuming after epoch %d", label, state["epoch"])

    def checkpoint(snap: dict[str, Any]) -> None:
        save_checkpoint(snap, ckpt)
        history[:] = snap["history"]
        write_json_atomic(out / "epochs.json", history)
        write_text_atomic(out / "epochs.csv", _csv(history))

    def report(epoch: int, m: EpochMetrics) -> None:
        blocks = " ".join(f"{a:.3f}" for a in m.block_val_accuracy)
        log.info("%s epoch %d/%d: val %.4f (blocks %s) %.0f img/s", label, epoch, plan.epochs,
                 m.val_accuracy, blocks, m.images_per_second)
        if stop_after is not None and epoch >= stop_after and epoch < plan.epochs:
            raise StopAfter

    try:
        result = fit(net, data, plan, on_epoch=report, resume=state, on_checkpoint=checkpoint)
    except StopAfter:
        return None
    test = evaluate(net, data.test, plan)
    return {
        "test_accuracy": test[-1], "block_test_accuracy": test,
        "val_accuracy": result.val_accuracy, "epochs": len(result.history),
        "train_seconds": result.train_seconds, "ideal_speedup": cost.ideal_speedup,
        "block_flops": cost.block_flops,
        "peak_activation_mb": cost.peak_saved_bytes * plan.batch_size / MB,
        "backprop_activation_mb": cost.backprop_saved_bytes * plan.batch_size / MB,
        "device": result.device, "peak_memory_bytes": result.peak_memory_bytes,
        "decoupling": to_document(d),
    }


def _csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    k = len(history[0]["block_val_accuracy"]) if history else 0
    cols = ["epoch", "val_accuracy", *[f"block{i + 1}_val_accuracy" for i in range(k)],
            *[f"block{i + 1}_train_loss" for i in range(k)], "seconds", "images_per_second"]
    w = csv.writer(buf)
    w.writerow(cols)
    for h in history:
        w.writerow([h["epoch"], h["val_accuracy"], *h["block_val_accuracy"], *h["train_loss"],
                    h["seconds"], h["images_per_second"]])
    return buf.getvalue()


def bp_for(d: Decoupling, lr: float) -> Decoupling:
    """End-to-end BP on the same backbone and width, SGD at ``lr`` with d's weight decay."""
    wd = d.optim[-1].weight_decay
    return Decoupling.end_to_end(d.backbone, width=d.width,
                                 optim=BlockOptim(lr=lr, weight_decay=wd,
                                                  optimizer=d.optim[-1].optimizer))

