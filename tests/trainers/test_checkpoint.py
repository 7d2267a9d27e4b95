"""Checkpoints: every way a file can fail to fit is one complete line naming it."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from bwbpf.search.cli import main
from bwbpf.spaces import BlockOptim, Decoupling, UserError, build
from bwbpf.trainers import TrainPlan, TrainResult
from bwbpf.trainers.checkpoint import load_checkpoint, restore, save_checkpoint, snapshot
from bwbpf.trainers.stepper import Stepper

TINY = ["--dataset", "synthetic", "--train-subset", "64", "--batch-size", "32", "--device", "cpu"]


def state_of(d: Decoupling) -> dict[str, Any]:
    """A fresh snapshot of ``d`` (no training needed to have one)."""
    net = build(d, 10, 3, 16, seed=0)
    step = Stepper(net, TrainPlan(device="cpu"), total_steps=4)
    return snapshot(1, net, step, torch.Generator(), TrainResult(val_accuracy=0.0))


def restore_into(state: dict[str, Any], d: Decoupling,
                 gen: torch.Generator | None = None) -> int:
    net = build(d, 10, 3, 16, seed=0)
    step = Stepper(net, TrainPlan(device="cpu"), total_steps=4)
    return restore(state, net, step, gen or torch.Generator(), TrainResult(val_accuracy=0.0))


def test_a_snapshot_restores_into_the_same_network() -> None:
    d = Decoupling.uniform("vgg8b", k=3, width=0.125)
    assert restore_into(state_of(d), d) == 1


@pytest.mark.parametrize(("written", "read", "why"), [
    (Decoupling.uniform("vgg8b", k=3, width=0.125), Decoupling.uniform("vgg8b", k=3, width=0.25),
     r"\(block 1: blocks\.0\.0\.0\.weight has shape \(16, 3, 3, 3\) there, \(32, 3, 3, 3\) "
     r"here\)$"),
    (Decoupling.uniform("vgg8b", k=3, width=0.125), Decoupling.uniform("vgg8b", k=2, width=0.125),
     r"\(3 blocks there, 2 here\)$"),
    (Decoupling.uniform("vgg8b", k=3, width=0.125),
     Decoupling.uniform("vgg8b", k=3, width=0.125, optim=BlockOptim(optimizer="adamw", lr=1e-3)),
     r"\(block 1: SGD there, AdamW here\)$"),
])
def test_a_snapshot_of_another_network_is_refused(written: Decoupling, read: Decoupling,
                                                  why: str) -> None:
    with pytest.raises(UserError, match=r"^the resume state was written for another network "
                       + why):
        restore_into(state_of(written), read)


def test_a_snapshot_from_another_kind_of_device_is_refused() -> None:
    d = Decoupling.uniform("vgg8b", k=2, width=0.125)
    state = state_of(d)
    state["generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    with pytest.raises(UserError, match=r"written on another kind of device .* resume on the "
                       "device it was written on$"):
        restore_into(state, d)


def _truncated(path: Path) -> None:
    torch.save({"net": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:500])


def _with_an_object(path: Path) -> None:
    torch.save({"net": collections.OrderedDict(), "extra": Path("x")}, path)


WRITERS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "empty": (lambda p: p.write_bytes(b""), r": the file is empty or cut short$"),
    "truncated": (_truncated, r": the file is damaged \(PytorchStreamReader failed reading zip "
                  r"archive: failed finding central directory\)$"),
    "text": (lambda p: p.write_text("hello\n"), r": not a file torch\.save wrote \(KeyError\)$"),
    "Python objects": (_with_an_object, r": it holds Python objects, not only tensors.*and is "
                       r"not loaded$"),
    "a list": (lambda p: torch.save([1, 2], p), r" is not a bwbpf-search checkpoint \(it holds "
               r"a list, not a dict\)$"),
    "no optimisers": (lambda p: torch.save({"format": 1, "net": {}}, p),
                      r" is not a bwbpf-search checkpoint \(no 'epoch' entry\)$"),
    "newer format": (lambda p: torch.save({**state_of(Decoupling.uniform("vgg8b", k=2,
                                           width=0.125)), "format": 9}, p),
                     r" has format 9; this version of bwbpf-search reads format 1$"),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_an_unusable_file_is_one_complete_line(kind: str, tmp_path: Path) -> None:
    write, reason = WRITERS[kind]
    path = tmp_path / "checkpoint.pt"
    write(path)
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    assert re.search(reason, msg), msg  # the reason, whole, to the end of the line


def _stopped_run(out: Path) -> Path:
    assert main(["-q", "train", "--arch", "paper", "--width", "0.25", "--epochs", "2",
                 "--stop-after", "1", "--out", str(out), *TINY]) == 0
    return out / "blockwise" / "checkpoint.pt"


def test_resume_from_another_networks_checkpoint_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _stopped_run(tmp_path / "run")
    # The same file name, written for the same decoupling at another width (a copied file).
    save_checkpoint(state_of(Decoupling.paper_default("vgg8b", width=0.125)), ckpt)
    capsys.readouterr()
    rc = main(["-q", "train", "--arch", "paper", "--width", "0.25", "--epochs", "2",
               "--resume", "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"checkpoint {ckpt} was written for another network (block 1: " in err
    assert "has shape (16, 3, 3, 3) there, (32, 3, 3, 3) here" in err


def test_resume_without_a_checkpoint_says_so(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--arch", "uniform", "--width", "0.125", "--epochs", "1", "--resume",
               "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert (f"blockwise: --resume: no checkpoint in {out / 'blockwise'}; starting at epoch 1"
            in err)
    assert json.loads((out / "metrics.json").read_text())["blockwise"]["epochs"] == 1


def test_a_checkpoint_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    state = state_of(Decoupling.uniform("vgg8b", k=2, width=0.125))
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"^cannot write checkpoint \S+/file/run/checkpoint\.pt: "
                       r"Not a directory$"):
        save_checkpoint(state, tmp_path / "file" / "run" / "checkpoint.pt")

    # A real write that fails past the first bytes, as on a full disk: a child process whose
    # files may not grow past 4 KiB (EFBIG), saving the same state.
    code = ("import resource, signal, sys, torch\n"
            "from pathlib import Path\n"
            "from bwbpf.spaces import UserError\n"
            "from bwbpf.trainers.checkpoint import save_checkpoint\n"
            "state = torch.load(sys.argv[1], weights_only=True)\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n save_checkpoint(state, Path(sys.argv[2]))\n"
            "except UserError as e:\n print(e)\n")
    whole = tmp_path.parent / f"{tmp_path.name}-state.pt"
    torch.save(state, whole)
    try:
        r = subprocess.run([sys.executable, "-c", code, str(whole),
                            str(tmp_path / "checkpoint.pt")],
                           capture_output=True, text=True, timeout=120)
    finally:
        whole.unlink()
    assert re.fullmatch(r"cannot write \S+/checkpoint\.pt: File too large\n", r.stdout), r
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no partial file left behind
