"""A `train` run's folder (--out): refused when it holds another run, prepared, written
epoch by epoch and at the end, and left empty when a fresh run fails before its first
checkpoint."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

from bwbpf.search.winners.train_settings import TrainSettings
from bwbpf.spaces import SearchSpace, UserError
from bwbpf.spaces.declared import before
from bwbpf.spaces.document import parse_json
from bwbpf.spaces.files import refuse_stdout, write_json_atomic, write_text_atomic

log = logging.getLogger("bwbpf.search")
RUN_FILES = ("metrics.json", "settings.json", "decoupling.json", "blockwise", "backprop")

# What a run's settings.json meant before a setting was recorded: what a study meant then.
RUN_BEFORE = {k: v for k, v in before(SearchSpace).items() if k in ("augment", "lr_schedule")}


def check_out(out: Path, settings: TrainSettings, *, resume: bool, force: bool) -> bool:
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
        if (bad := settings.differs_from(old)) is not None:
            raise UserError(f"--resume: {out} was run with {bad}={old.get(bad)!r}, "
                            f"not {settings.record()[bad]!r}")
        return True
    if any((out / f).exists() for f in RUN_FILES) and not force:
        what = "a finished run" if (out / "metrics.json").exists() else "an unfinished run"
        raise UserError(f"--out {out} holds {what}; pass --resume to continue it or "
                        "--force to start over")
    return False


def prepare_out(out: Path, settings: TrainSettings, *, resume: bool, force: bool) -> bool:
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
    write_json_atomic(out / "settings.json", settings.record())
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


def write_epochs(out: Path, history: list[dict[str, Any]]) -> None:
    """The per-epoch metrics of a run, as JSON and CSV (every schedule writes the same)."""
    write_json_atomic(out / "epochs.json", history)
    write_text_atomic(out / "epochs.csv", _csv(history))


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


def finish(out: Path, results: dict[str, dict[str, Any] | None], settings: TrainSettings,
           stop_after: int | None) -> int:
    """The end of a `train` run: its metrics.json and test accuracies, or, when it stopped at
    --stop-after, how to continue it."""
    if any(v is None for v in results.values()):
        print(f"stopped after epoch {stop_after}; continue with --resume --out {out}")
        return 0
    write_json_atomic(out / "metrics.json", {**results, "settings": settings.record()})
    for key, res in results.items():
        assert res is not None
        print(f"{key:9s} test accuracy {res['test_accuracy']:.4f}")
    print(f"results: {out / 'metrics.json'}")
    return 0
