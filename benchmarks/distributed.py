"""Block-parallel training across processes: the distributed schedule (K=2 ranks over Gloo,
one thread each, started by `train --nproc 2`) against the sequential schedule at one thread,
as a share of the ideal (sum / max of the block times), and the transfer of one batch between
two ranks as a share of a sequential step. Times are the trainer's own epoch times (start-up
and evaluation excluded), the fastest of REPEATS runs, the set-ups taking turns. The machine's
other work counts in every figure: on a shared 2-core machine they are noisy.

    .venv/bin/python benchmarks/distributed.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import Row, show

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, balanced_cuts, build
from bwbpf.trainers import unit_times
from bwbpf.trainers.cost import against_bp, block_sums
from bwbpf.trainers.shards import merged_weights

BACKBONE, WIDTH, BATCH, STEPS, REPEATS, SENDS = "vgg11", 0.5, 128, 40, 2, 60
CORES = os.cpu_count() or 1
HERE = Path(__file__).resolve().parent


def decoupling(cuts: tuple[int, ...]) -> Decoupling:
    k = len(cuts) + 1
    return Decoupling(BACKBONE, cuts, (AuxSpec("conv", 1, 0.5),) * (k - 1),
                      (BlockOptim(lr=0.02),) * k, WIDTH)


def train(arch: Path, out: Path, schedule: str) -> float:
    """Seconds of one epoch of STEPS batches (the trainer's own timing)."""
    extra = ["--nproc", "2"] if schedule == "distributed" else []
    subprocess.run([sys.executable, "-m", "bwbpf.search", "-q", "train", "--arch", str(arch),
                    "--dataset", "fashion-mnist", "--no-download", "--image-size", "32",
                    "--train-subset", str(BATCH * STEPS), "--val-size", "256", "--epochs", "1",
                    "--batch-size", str(BATCH), "--device", "cpu", "--threads", "1",
                    "--schedule", schedule, *extra, "--out", str(out), "--force"],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    return float(json.loads((out / "blockwise" / "epochs.json").read_text())[0]["seconds"])


def transfer_seconds(shape: tuple[int, ...]) -> float:
    """Seconds per batch to move one (activations, labels) batch of ``shape`` from rank 0 to
    rank 1 with the trainer's Outbox/Inbox over Gloo (nothing else running in the ranks)."""
    from bwbpf.search.command_line.ranks import Ranks

    ranks = Ranks([sys.executable, str(HERE / "distributed.py"), "--transfer",
                   ",".join(map(str, shape))], 2, 1, stdout=subprocess.PIPE, text=True)
    if ranks.wait(Path(tempfile.gettempdir())) != 0:
        raise RuntimeError("the transfer ranks failed")
    return float(ranks.procs[1].communicate()[0].strip().splitlines()[-1])


def transfer_rank(shape: tuple[int, ...]) -> None:
    """One rank of ``transfer_seconds``: rank 0 sends SENDS batches, rank 1 times them."""
    from bwbpf.trainers.group import join_group
    from bwbpf.trainers.transport import Inbox, Outbox

    torch.set_num_threads(1)
    g = join_group("cpu", 120)
    x, y = torch.randn(shape), torch.randint(0, 10, shape[:1])
    if g.first:
        box = Outbox(1)
        for _ in range(SENDS):
            box.send(x, y)
        box.flush()
    else:
        got = Inbox(0, g.device, x.dtype).stream([shape] * SENDS)
        next(got)  # the first batch pays for the connection
        start = time.perf_counter()
        for _ in got:
            pass
        print((time.perf_counter() - start) / (SENDS - 1), flush=True)
    g.all_sum(torch.zeros(1))
    g.leave()


def run() -> list[Row]:
    torch.set_num_threads(1)
    times = unit_times(BACKBONE, width=WIDTH, in_channels=1, image_size=(32, 32), batch=BATCH)
    d = decoupling(balanced_cuts(times, 2))
    block_t = block_sums(times, d.cuts)
    ideal = min(against_bp(block_t, sum(times)).block_parallelism, CORES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        arch = Path(tmp) / "k2.json"
        arch.write_text(d.to_json())
        seq, dist_ = float("inf"), float("inf")
        for _ in range(REPEATS):
            seq = min(seq, train(arch, Path(tmp) / "seq", "sequential"))
            dist_ = min(dist_, train(arch, Path(tmp) / "dist", "distributed"))
        a = torch.load(Path(tmp) / "seq" / "blockwise" / "checkpoint.pt",
                       weights_only=True)["net"]
        b = merged_weights(Path(tmp) / "dist" / "blockwise")
        same = all(torch.equal(a[k], b[k]) for k in a)
        speedup = seq / dist_
        rows.append(Row("K=2 processes (Gloo, 1 thread each) vs sequential (1 thread) / ideal",
                        speedup / ideal, ">= 0.8",
                        f"{speedup:.2f}x of ideal {ideal:.2f}x ({seq:.2f} s vs {dist_:.2f} s for "
                        f"{STEPS} steps of {BATCH}; cut {d.cuts} by unit time; {CORES} cores); "
                        f"weights bitwise equal: {same}"))
    with torch.no_grad():
        net = build(d, 10, 1, 32)
        shape = (BATCH, *net.blocks[0](torch.zeros(2, 1, 32, 32)).shape[1:])
    per_batch = transfer_seconds(shape)
    step = seq / STEPS
    mb = torch.Size(shape).numel() * 4 / 2**20
    rows.append(Row("transfer of one batch between 2 ranks / sequential step time",
                    per_batch / step, "<= 0.1",
                    f"{per_batch * 1e3:.2f} ms for {mb:.1f} MiB of activations {shape} + "
                    f"labels, step {step * 1e3:.0f} ms"))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--transfer":
        transfer_rank(tuple(int(n) for n in sys.argv[2].split(",")))
    else:
        show(run())
