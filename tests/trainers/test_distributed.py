"""The distributed schedule: ranks in real processes over Gloo, the sequential arithmetic, the
checkpoint protocol, faults and refusals.

Every run is tiny (synthetic 16x16 images, a 0.125-width VGG) and one thread per rank; ports are
chosen at runtime (the --nproc launcher's store, torchrun --standalone). The ranks import this
checkout through the inherited PYTHONPATH (`python -m bwbpf.search`, never the console script).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bwbpf.search.cli import main
from bwbpf.search.command_line.launch import PROGRAM
from bwbpf.search.command_line.parser import parse
from bwbpf.search.command_line.ranks import Ranks, rank_argv
from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling
from bwbpf.trainers.shards import MANIFEST, merged_weights, read_manifest

pytestmark = pytest.mark.integration  # starts processes; still in `make test`

TINY = ["--dataset", "synthetic", "--batch-size", "32", "--device", "cpu", "--width", "0.125",
        "--train-subset", "256", "--epochs", "2"]
RUN_S = 300  # generous: the suite shares 2 slow cores; a tiny run takes seconds of training
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def arch(tmp: Path, k: int, aux: tuple[AuxSpec, ...] = (), **optim: BlockOptim) -> str:
    d = Decoupling.uniform("vgg8b", k=k, width=0.125)
    if aux:
        d = replace(d, aux=aux)
    if optim:
        d = replace(d, optim=tuple(optim.get(f"b{i + 1}", o) for i, o in enumerate(d.optim)))
    path = tmp / f"k{k}.json"
    path.write_text(d.to_json())
    return str(path)


def cli(*argv: str, timeout: float = RUN_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bwbpf.search", "-q", "train", *argv],
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def sequential(out: Path, *argv: str) -> dict[str, torch.Tensor]:
    """The reference: the sequential schedule in this process, one thread."""
    torch.set_num_threads(1)
    assert main(["-q", "train", *argv, "--out", str(out)]) == 0
    return dict(torch.load(out / "blockwise" / "checkpoint.pt", weights_only=True)["net"])


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith("bwbpf-search")]


def test_two_ranks_stopped_and_resumed_equal_the_sequential_schedule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--stop-after 1, then --resume, on 2 ranks (one holding 2 of the 3 blocks) ends with the
    weights, accuracies and files of one uninterrupted sequential run; --compare-bp rides
    along (its BP run stays in rank 0's process)."""
    a = arch(tmp_path, 3)
    ref, seq = sequential(tmp_path / "seq", "--arch", a, "--compare-bp", *TINY), tmp_path / "seq"
    out = tmp_path / "d"
    argv = ["--arch", a, "--compare-bp", *TINY, "--schedule", "distributed", "--out", str(out)]
    r = cli(*argv, "--nproc", "2", "--stop-after", "1")
    assert r.returncode == 0 and "stopped after epoch 1" in r.stdout, r.stderr
    manifest = read_manifest(out / "blockwise")
    assert manifest is not None and manifest["epoch"] == 1
    assert sorted(b - a for a, b in manifest["blocks"]) == [1, 2]
    assert not (out / "metrics.json").exists()
    # another number of ranks is refused before any rank starts, saying how many were used
    assert main(["train", *argv, "--nproc", "3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was run with ranks=2, not 3" in err and err.count("\n") == 1
    r = cli(*argv, "--nproc", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert same(ref, merged_weights(out / "blockwise"))
    assert sorted(p.name for p in (out / "blockwise").glob("checkpoint*")) == [
        "checkpoint-e2-r0.pt", "checkpoint-e2-r1.pt", MANIFEST]  # epoch 1's shards are gone
    mine, theirs = (json.loads((p / "metrics.json").read_text()) for p in (out, seq))
    assert mine.keys() == theirs.keys() == {"blockwise", "backprop", "settings"}
    assert mine["blockwise"].keys() == theirs["blockwise"].keys()
    assert mine["blockwise"]["block_test_accuracy"] == theirs["blockwise"]["block_test_accuracy"]
    assert mine["backprop"]["test_accuracy"] == theirs["backprop"]["test_accuracy"]
    epochs = [json.loads((p / "blockwise" / "epochs.json").read_text()) for p in (out, seq)]
    assert [e.keys() for e in epochs[0]] == [e.keys() for e in epochs[1]]
    assert [e["block_val_accuracy"] for e in epochs[0]] == [
        e["block_val_accuracy"] for e in epochs[1]]


def test_three_ranks_under_torchrun_equal_the_sequential_schedule(tmp_path: Path) -> None:
    # Blocks 2 and 3 rebuild the input image (infopro): the images travel down the ranks.
    a = arch(tmp_path, 4, (AuxSpec(), AuxSpec("downstream", 1, loss="infopro"),
                           AuxSpec("linear", loss="infopro")))
    ref = sequential(tmp_path / "seq", "--arch", a, *TINY)
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
         "-m", "bwbpf.search", "-q", "train", "--arch", a, *TINY, "--schedule", "distributed",
         "--threads", "1", "--out", str(tmp_path / "d")],
        env=ENV, capture_output=True, text=True, timeout=RUN_S)
    assert r.returncode == 0, r.stderr
    assert "results:" in r.stdout and r.stdout.count("test accuracy") == 1  # rank 0 alone
    manifest = read_manifest(tmp_path / "d" / "blockwise")
    assert manifest is not None and sorted(b - a for a, b in manifest["blocks"]) == [1, 1, 2]
    assert same(ref, merged_weights(tmp_path / "d" / "blockwise"))


def test_a_killed_rank_stops_every_rank_and_the_run_resumes(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    a = arch(tmp_path, 4)
    big = [*TINY[:-4], "--train-subset", "640", "--epochs", "3"]  # 20 steps an epoch
    ref = sequential(tmp_path / "seq", "--arch", a, *big)
    out = tmp_path / "d"
    argv = ["-q", "train", "--arch", a, *big, "--schedule", "distributed", "--out", str(out)]
    ranks = Ranks(rank_argv(parse(argv), 1), 3, 1, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True)
    end = time.time() + RUN_S
    while time.time() < end and (read_manifest(out / "blockwise") or {}).get("epoch") != 1:
        assert all(p.poll() is None for p in ranks.procs), ranks.procs[0].communicate()
        time.sleep(0.05)
    ranks.procs[1].send_signal(signal.SIGKILL)  # early in epoch 2
    killed = time.time()
    code = ranks.wait(out)
    assert time.time() - killed < 60 and code == 1
    assert all(p.returncode != 0 for p in ranks.procs)
    said = capfd.readouterr().err + "".join(p.communicate()[1] for p in ranks.procs)
    assert "Traceback" not in said
    assert lines(said) == [
        f"bwbpf-search: rank 1 was lost (killed by SIGKILL); the other ranks stopped; the last "
        f"complete checkpoint stays in {out / 'blockwise'}; continue with --resume"]
    manifest = read_manifest(out / "blockwise")
    assert manifest is not None and manifest["epoch"] in (1, 2)
    assert all((out / "blockwise" / s).is_file() for s in manifest["shards"])
    assert not (out / "metrics.json").exists()
    r = cli("--arch", a, *big, "--schedule", "distributed", "--nproc", "3", "--out", str(out),
            "--resume")
    assert r.returncode == 0, r.stderr
    assert same(ref, merged_weights(out / "blockwise"))


def test_a_nan_in_one_block_stops_every_rank_naming_the_block(tmp_path: Path) -> None:
    a = arch(tmp_path, 3, b3=BlockOptim(lr=10.0, weight_decay=0.0))  # block 3 diverges
    r = cli("--arch", a, *TINY, "--schedule", "distributed", "--nproc", "2",
            "--out", str(tmp_path / "d"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(lines(r.stderr)) == 1, r.stderr
    assert "block 3 loss is not finite" in r.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--nproc", "5"], "5 ranks but the decoupling has 4 blocks: every rank needs a block; "
                       "launch at most 4"),
    (["--nproc", "2", "--blocks-per-rank", "4,0"], "argument --blocks-per-rank: 0 must be >= 1"),
    (["--nproc", "2", "--blocks-per-rank", "1,1"],
     "--blocks-per-rank 1,1 places 2 blocks; the decoupling has 4"),
    (["--nproc", "3", "--blocks-per-rank", "2,2"],
     "--blocks-per-rank 2,2 gives blocks to 2 ranks, but 3 were launched"),
    ([], "--schedule distributed runs one process per rank; launch it with torchrun "
         "--nproc-per-node K -m bwbpf.search train"),
    (["--device", "cuda:1"], "--device: 'cuda:1': under schedule='distributed' every rank"),
])
def test_bad_distributed_input_is_one_line(argv: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    argv = ["train", "--arch", "uniform", *TINY, "--schedule", "distributed", *argv,
            "--out", str(tmp_path / "d")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--nproc", "2"], "--nproc needs --schedule distributed"),
    (["train", "--blocks-per-rank", "2,2"], "--blocks-per-rank needs --schedule distributed"),
    (["run", "--schedule", "distributed"], "--schedule distributed trains one network across "
                                           "processes (`train`); a search scales out by trials"),
])
def test_distributed_flags_elsewhere_are_refused(argv: list[str], message: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--out", str(tmp_path / "d")] if argv[0] == "train" else [
        "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main([*argv, "--dataset", "synthetic", *where]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_rank_argv_drops_nproc_and_gives_each_rank_its_threads() -> None:
    assert rank_argv(parse(["-q", "train", "--nproc", "2", "--epochs", "1"]), 1) == [
        *PROGRAM, "-q", "train", "--epochs=1", "--threads", "1"]
    assert rank_argv(parse(["train", "--npr=2", "--threads", "2"]), 1) == [
        *PROGRAM, "train", "--threads=2"]


REPEATS = int(os.environ.get("BWBPF_RESUME_REPEATS", "3"))  # a longer soak: set it to 60


def test_a_finished_resume_exits_zero_every_time(tmp_path: Path) -> None:
    """Rank 0 used to abort after writing metrics.json (SIGABRT, "terminate called without an
    active exception", about 1 run in 20): a Gloo thread released a collective's tensors while
    the interpreter finalised (trainers.group.end_rank). Every rank process of every run exits
    cleanly here; each run is a fresh chance for the race (4 runs here, about a minute:
    BWBPF_RESUME_REPEATS raises the resumes from 3)."""
    a = arch(tmp_path, 2)
    argv = ["--arch", a, *TINY, "--epochs", "1", "--schedule", "distributed", "--nproc", "2",
            "--out", str(tmp_path / "d")]
    r = cli(*argv)
    assert r.returncode == 0, r.stderr
    for i in range(REPEATS):
        r = cli(*argv, "--resume")
        assert r.returncode == 0 and "results:" in r.stdout, f"resume {i + 1}: {r.stderr}"
        assert "terminate called" not in r.stderr and lines(r.stderr) == []
