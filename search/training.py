"""`bwbpf-search train`: full training of one decoupling (and the BP baseline) with results,
checkpoints and per-epoch metrics on disk, resumable after a crash or a kill."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from bwbpf.reports.record import MB
from bwbpf.spaces import (
    BlockOptim,
    Decoupling,
    SearchSpace,
    UserError,
    build,
    is_named,
    to_document,
)
from bwbpf.spaces.declared import before
from bwbpf.spaces.document import Trained, parse_json, read_document
from bwbpf.spaces.files import refuse_stdout, write_json_atomic, write_text_atomic
from bwbpf.trainers import (
    Data,
    EpochMetrics,
    NetCost,
    NonFiniteLoss,
    TrainPlan,
    TrainResult,
    evaluate,
    fit,
    measure_cost,
)
from bwbpf.trainers.checkpoint import load_checkpoint, save_checkpoint
from bwbpf.trainers.cost import block_groups
from bwbpf.trainers.distributed import Sizes, evaluate_ranked, fit_ranked
from bwbpf.trainers.group import Group, ranges_of
from bwbpf.trainers.shards import Shards

log = logging.getLogger("bwbpf.search")
RUN_FILES = ("metrics.json", "settings.json", "decoupling.json", "blockwise", "backprop")


class StopAfter(Exception):
    """Raised after the epoch --stop-after names: the run ends resumable."""


class Diverged(RuntimeError):
    """A run's loss became NaN or inf; the message is the one line `train` ends with (exit 1):
    which run, block, epoch and step, and the flag to lower."""


def load_arch(arch: str, backbone: str | None, width: float | None, lr: float
              ) -> tuple[Decoupling, Trained, dict[str, Any] | None]:
    """paper / uniform for a backbone, or an exported file; returns the decoupling, what the
    file says of how it was found (nothing for built-ins), and the file's document (None for
    built-ins). A file's decoupling is as written: ``carry_arch`` moves it to another backbone
    or width."""
    if arch in ("paper", "uniform"):
        # the search's default net (SearchSpace), so a trained baseline matches a default run
        b = backbone or SearchSpace.backbones[0]
        w = width or (1.0 if is_named(b) else SearchSpace.width)  # named: as built
        make = Decoupling.paper_default if arch == "paper" else Decoupling.uniform
        return make(b, width=w, optim=BlockOptim(lr=lr)), Trained(), None
    path = Path(arch)
    if not path.is_file():
        raise UserError(f"--arch {arch}: not 'paper', 'uniform' or an existing JSON file")
    d, doc = read_document(path, "--arch")
    return d, Trained.of(doc), doc


# What a run's settings.json meant before a setting was recorded: what a study meant then.
RUN_BEFORE = {k: v for k, v in before(SearchSpace).items() if k in ("augment", "lr_schedule")}


def check_out(out: Path, settings: dict[str, Any], *, resume: bool, force: bool) -> bool:
    """Refuses to mix runs: a finished or different run is kept unless --force. Touches
    nothing; True when ``out`` holds the run that --resume continues."""
    refuse_stdout(out, "--out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    stored = out / "settings.json"
    if resume and stored.is_file():
        try:
            old = parse_json(stored.read_text(), f"--resume: {stored}")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--resume: cannot read {stored} ({type(e).__name__})") from None
        if not isinstance(old, dict):
            raise UserError(f"--resume: {stored} is not a run's settings")
        old = {**RUN_BEFORE, **old}
        # "transferred" says how the decoupling was placed; the decoupling itself is compared
        bad = [k for k in settings if k not in ("resume", "force", "transferred")
               and old.get(k) != settings[k]]
        if bad:
            raise UserError(f"--resume: {out} was run with {bad[0]}={old.get(bad[0])!r}, "
                            f"not {settings[bad[0]]!r}")
        return True
    if any((out / f).exists() for f in RUN_FILES) and not force:
        what = "a finished run" if (out / "metrics.json").exists() else "an unfinished run"
        raise UserError(f"--out {out} holds {what}; pass --resume to continue it or "
                        "--force to start over")
    return False


def check_fits(decouplings: list[Decoupling], data: Data) -> None:
    """Builds every net once without memory (the meta device): a decoupling that cannot take
    this data is refused before anything is written."""
    for d in decouplings:
        with torch.device("meta"):
            build(d, data.num_classes, data.in_channels, data.image_size)


def prepare_out(out: Path, settings: dict[str, Any], *, resume: bool, force: bool) -> bool:
    """The first write into ``out``: after check_out (and every other check) passed, an earlier
    run there is removed (--force) and the settings are written. True when it continues a
    run (--resume)."""
    continuing = check_out(out, settings, resume=resume, force=force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    if continuing:
        return True
    if resume:  # a script may pass --resume every time; the first run says what it did
        log.warning("--resume: %s holds no earlier run; starting a new one", out)
    for f in RUN_FILES:  # only with --force: check_out refused an earlier run otherwise
        remove(out / f)
    write_json_atomic(out / "settings.json", settings)
    return False


@contextmanager
def undone_unless_saved(out: Path, *, fresh: bool, made_out: bool) -> Iterator[None]:
    """A fresh run that fails (a full disk, Ctrl-C, a fault) before its first checkpoint leaves
    nothing behind: its settings and empty folders go, and --out itself when this run made it.
    Once a checkpoint exists, everything stays for --resume."""
    try:
        yield
    except BaseException:
        if fresh and not any(out.glob("*/checkpoint.pt")):
            with suppress(OSError, UserError):
                for f in RUN_FILES:
                    remove(out / f)
                if made_out:
                    out.rmdir()  # only when empty
        raise


def remove(p: Path) -> None:
    """Removes an earlier run's file or folder. A symbolic link is removed, never followed:
    what it points to lies outside --out and is not the run's to delete."""
    try:
        if p.is_symlink() or not p.is_dir():
            p.unlink(missing_ok=True)
        else:
            shutil.rmtree(p)
    except OSError as e:
        raise UserError(f"--force: cannot remove {p} ({e.strerror or e})") from None


def train_one(d: Decoupling, data: Data, plan: TrainPlan, out: Path, label: str, *,
              resume: bool, stop_after: int | None) -> dict[str, Any] | None:
    """Trains (or resumes) into ``out``; None when stopped by --stop-after."""
    ckpt = out / "checkpoint.pt"
    state = load_checkpoint(ckpt) if resume and ckpt.is_file() else None
    net = build(d, data.num_classes, data.in_channels, data.image_size, seed=plan.seed)
    cost = measure_cost(net, data.in_channels, data.image_size)
    if state:
        log.info("%s: resuming after epoch %d", label, state["epoch"])
    elif resume:
        log.info("%s: --resume: no checkpoint in %s; starting at epoch 1", label, out)

    def checkpoint(snap: dict[str, Any]) -> None:
        save_checkpoint(snap, ckpt)
        write_epochs(out, snap["history"])

    try:
        result = fit(net, data, plan, on_epoch=reporter(label, plan, stop_after), resume=state,
                     on_checkpoint=checkpoint)
    except StopAfter:
        return None
    except NonFiniteLoss as e:  # its message names the block, the epoch and the step
        flag = "--bp-lr" if label == "backprop" else "--lr"
        raise Diverged(f"{label} training diverged: {e}; try a lower {flag}") from None
    return outcome(d, cost, result, evaluate(net, data.test, plan), plan)


def train_ranked(d: Decoupling, data: Data | None, sizes: Sizes, plan: TrainPlan, out: Path,
                 label: str, group: Group, placement: tuple[int, ...] | None, *, resume: bool,
                 stop_after: int | None) -> dict[str, Any] | None:
    """``train_one`` for one rank of a distributed run (rank 0 holds the data): every rank
    trains its blocks and writes its checkpoint shards into ``out``; rank 0 also the
    per-epoch metrics. The blocks are spread by ``placement`` (blocks per rank), else
    balanced by their FLOPs."""
    net = build(d, sizes.num_classes, sizes.in_channels, sizes.image_size, seed=plan.seed)
    cost = measure_cost(net, sizes.in_channels, sizes.image_size)
    group.ranges = tuple(ranges_of(placement) if placement
                         else block_groups(cost.block_flops, group.world))
    report = reporter(label, plan, stop_after) if group.first else stopper(plan, stop_after)

    def checkpoint(snap: dict[str, Any]) -> None:
        if group.first:
            write_epochs(out, snap["history"])

    out.mkdir(parents=True, exist_ok=True)  # a rank on another machine may have none yet
    try:
        result, step = fit_ranked(net, data, sizes, plan, group, Shards(out, group),
                                  resume=resume, on_epoch=report, on_checkpoint=checkpoint)
    except StopAfter:
        return None
    test = evaluate_ranked(step, data.test if data is not None else None, sizes.test)
    return outcome(d, cost, result, test, plan)


def write_epochs(out: Path, history: list[dict[str, Any]]) -> None:
    """The per-epoch metrics of a run, as JSON and CSV (every schedule writes the same)."""
    write_json_atomic(out / "epochs.json", history)
    write_text_atomic(out / "epochs.csv", _csv(history))


def reporter(label: str, plan: TrainPlan, stop_after: int | None
             ) -> Callable[[int, EpochMetrics], None]:
    """The per-epoch callback: one log line, and StopAfter after the --stop-after epoch."""

    def report(epoch: int, m: EpochMetrics) -> None:
        blocks = " ".join(f"{a:.3f}" for a in m.block_val_accuracy)
        log.info("%s epoch %d/%d: val %.4f (blocks %s) %.0f img/s", label, epoch, plan.epochs,
                 m.val_accuracy, blocks, m.images_per_second)
        stopper(plan, stop_after)(epoch, m)

    return report


def stopper(plan: TrainPlan, stop_after: int | None) -> Callable[[int, EpochMetrics], None]:
    """StopAfter after the --stop-after epoch (unless it is the last)."""

    def stop(epoch: int, m: EpochMetrics) -> None:
        if stop_after is not None and epoch >= stop_after and epoch < plan.epochs:
            raise StopAfter

    return stop


def outcome(d: Decoupling, cost: NetCost, result: TrainResult, test: list[float],
            plan: TrainPlan) -> dict[str, Any]:
    """A finished run's entry in metrics.json."""
    return {
        "test_accuracy": test[-1], "block_test_accuracy": test,
        "val_accuracy": result.val_accuracy, "epochs": len(result.history),
        "train_seconds": result.train_seconds, "speedup": cost.speedup,
        "compute_overhead": cost.compute_overhead, "memory_ratio": cost.memory_ratio,
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



def finish(out: Path, results: dict[str, dict[str, Any] | None], settings: dict[str, Any],
           stop_after: int | None) -> int:
    """The end of a `train` run: its metrics.json and test accuracies, or, when it stopped at
    --stop-after, how to continue it."""
    if any(v is None for v in results.values()):
        print(f"stopped after epoch {stop_after}; continue with --resume --out {out}")
        return 0
    write_json_atomic(out / "metrics.json", {**results, "settings": settings})
    for key, res in results.items():
        assert res is not None
        print(f"{key:9s} test accuracy {res['test_accuracy']:.4f}")
    print(f"results: {out / 'metrics.json'}")
    return 0
