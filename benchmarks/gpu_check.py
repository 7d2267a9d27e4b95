"""The CUDA fast path, measured: a 3-trial study (ResNet-18, Fashion-MNIST at 32x32, 3 epochs
a trial), images/s BP-free vs BP, their peak-memory ratio, pipelined (one CUDA stream per block)
vs sequential. Prints one table. `benchmarks/gpu_check.sh` runs it on a GPU machine;
`--smoke` runs a tiny version on the CPU (the test suite does, so it cannot rot).

    python3 benchmarks/gpu_check.py --data-dir DIR --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna
import torch
from common import show_pairs

from bwbpf.search.run.runner import run_search
from bwbpf.search.study.settings import SearchSettings
from bwbpf.spaces import Decoupling, SearchSpace, build
from bwbpf.trainers import TrainPlan, fit, load_data


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny, on synthetic data (CPU)")
    args = ap.parse_args()
    smoke = args.smoke
    dataset = "synthetic" if smoke else "fashion-mnist"
    backbone, width = ("vgg8b", 0.125) if smoke else ("resnet18", 1.0)
    epochs, batch = (1, 64) if smoke else (3, 512)
    dev = torch.device(args.device)
    print(f"device {dev}: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}", flush=True)
    rows: list[tuple[str, str]] = []

    # 1. a 3-trial study: data loaded once, trials back to back in this process
    with tempfile.TemporaryDirectory() as tmp:
        s = SearchSettings(study="gpu", storage=f"sqlite:///{tmp}/gpu.db", dataset=dataset,
                           data_dir=str(args.data_dir) if args.data_dir else None,
                           download=False, image_size=None if smoke else 32, epochs=epochs,
                           batch_size=batch, n_trials=3, sampler="random", pruner="none",
                           baselines=False, device=args.device, quiet=True,
                           confirm_top=0,  # the trials' own speed is what is checked
                           space=SearchSpace(backbones=(backbone,), width=width))
        start = time.perf_counter()
        study = run_search(s)
        wall = time.perf_counter() - start
        for t in study.get_trials():
            if t.duration:
                rows.append((f"trial {t.number} ({t.user_attrs.get('train_seconds', 0):.1f} s "
                             f"training, {t.state.name.lower()})",
                             f"{t.duration.total_seconds():.1f} s"))
        rows.append(("3-trial study, wall (data loading included)", f"{wall:.1f} s"))
        optuna.delete_study(study_name="gpu", storage=s.storage)

    # 2-4. BP-free vs BP throughput and memory; pipelined vs sequential
    data = load_data(dataset, data_dir=args.data_dir, device=dev, download=False,
                     image_size=None if smoke else 32)
    results = {}
    for name, d, schedule in (
            ("bpfree", Decoupling.paper_default(backbone, width=width), "sequential"),
            ("bp", Decoupling.end_to_end(backbone, width=width), "sequential"),
            ("pipelined", Decoupling.paper_default(backbone, width=width), "pipelined")):
        net = build(d, data.num_classes, data.in_channels, data.image_size, seed=0)
        r = fit(net, data, TrainPlan(epochs=1, batch_size=batch, device=args.device,
                                     schedule=schedule))  # type: ignore[arg-type]
        results[name] = r
        rows.append((f"{name}: images/s, train seconds, peak MiB",
                     f"{r.images_per_second:.0f}, {r.train_seconds:.2f}, "
                     f"{(r.peak_memory_bytes or 0) / 2**20:.0f}"))
    bf, bp, pl = results["bpfree"], results["bp"], results["pipelined"]
    rows.append(("images/s BP-free / BP", f"{bf.images_per_second / bp.images_per_second:.3f}"))
    if bf.peak_memory_bytes and bp.peak_memory_bytes:
        ratio = bf.peak_memory_bytes / bp.peak_memory_bytes
        rows.append(("peak memory BP-free / BP", f"{ratio:.3f}"))
    rows.append(("pipelined (streams) / sequential time",
                 f"{pl.train_seconds / bf.train_seconds:.3f}"))
    show_pairs(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
