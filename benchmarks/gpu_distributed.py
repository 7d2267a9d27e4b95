"""The distributed schedule on every GPU of one machine (NCCL) against one GPU: a ResNet-18
decoupling with one block per GPU on Fashion-MNIST at 32x32, 2 epochs each way, images/s from
the trainer's own epoch times (the first epoch is warm-up: the table uses the second). Prints
one table. `benchmarks/gpu_distributed.sh` runs it; `--smoke` runs a tiny version on the CPU
with 2 Gloo ranks, so the script cannot rot.

    python3 benchmarks/gpu_distributed.py --data-dir DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import show_pairs

from bwbpf.spaces import Decoupling


def train(out: Path, argv: list[str], ranks: int) -> dict:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node", str(ranks), "-m", "bwbpf.search"] if ranks > 1
                else [sys.executable, "-m", "bwbpf.search"])
    subprocess.run([*launcher, "-q", "train", *argv, "--out", str(out)], check=True,
                   timeout=500)
    return json.loads((out / "blockwise" / "epochs.json").read_text())[-1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny, synthetic, 2 CPU ranks")
    args = ap.parse_args()
    gpus = 2 if args.smoke else torch.cuda.device_count()
    if gpus < 2:
        print(f"needs 2 or more GPUs; this machine has {gpus}")
        return 2
    backbone, width = ("vgg8b", 0.125) if args.smoke else ("resnet18", 1.0)
    data = (["--dataset", "synthetic", "--device", "cpu", "--batch-size", "32"] if args.smoke
            else ["--dataset", "fashion-mnist", "--no-download", "--image-size", "32",
                  "--device", "cuda", "--batch-size", "512"]
            + (["--data-dir", str(args.data_dir)] if args.data_dir else []))
    with tempfile.TemporaryDirectory() as tmp:
        arch = Path(tmp) / "arch.json"
        arch.write_text(Decoupling.uniform(backbone, k=gpus, width=width).to_json())
        argv = ["--arch", str(arch), "--epochs", "2", *data]
        one = train(Path(tmp) / "one", [*argv, "--schedule", "sequential"], 1)
        many = train(Path(tmp) / "many", [*argv, "--schedule", "distributed"], gpus)
    name = torch.cuda.get_device_name(0) if not args.smoke else "cpu"
    speedup = many["images_per_second"] / one["images_per_second"]
    backend = "Gloo" if args.smoke else "NCCL"
    rows = [("ranks (one per GPU)", f"{gpus} x {name}"),
            ("one GPU, sequential: images/s", f"{one['images_per_second']:.0f}"),
            (f"{gpus} ranks, distributed ({backend}): images/s",
             f"{many['images_per_second']:.0f}"),
            ("speed-up over one GPU", f"{speedup:.2f}"),
            ("validation accuracy one / distributed",
             f"{one['val_accuracy']:.4f} / {many['val_accuracy']:.4f}")]
    show_pairs(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
