"""What in the training set-up moves the BP vs block-wise gap: end-to-end BP and a K=3
decoupling of vgg8b x0.25 trained by ``bwbpf.trainers.fit`` under set-up variants (augmentation,
warm-up + cosine vs one-cycle, the classifier's hidden FC, Nesterov), Fashion-MNIST test split.

    .venv/bin/python benchmarks/setup_study.py            # the real run (about an hour here)
    .venv/bin/python benchmarks/setup_study.py --tiny     # synthetic data, seconds

Variants (a)-(e) run on seed 0 first; then (b), (c), (d) on the ``--extra-seeds``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, build
from bwbpf.spaces.backbones import BACKBONES, VGGSpec, get_backbone
from bwbpf.trainers import Data, TrainPlan, evaluate, fit, load_data

BACKBONE, WIDTH, LR, CUTS = "vgg8b", 0.25, 0.1, (2, 4)
HEADS = (AuxSpec("conv", 1, 2.0), AuxSpec("conv", 1, 1.0))  # conv heads, depth 1, widths 2 / 1
NOFC = "vgg8b_nofc"  # vgg8b without its hidden FC: pool + one linear layer, as ResNet's


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    augment: bool = False
    lr_schedule: str = "cosine"
    backbone: str = BACKBONE
    nesterov: bool = True


VARIANTS = (
    Variant("a", "default (augment, warm-up + cosine)", augment=True),
    Variant("b", "no augment, cosine"),
    Variant("c", "no augment, one-cycle", lr_schedule="onecycle"),
    Variant("d", "no augment, cosine, no hidden FC", backbone=NOFC),
    Variant("e", "no augment, cosine, momentum without Nesterov", nesterov=False),
)


def register_nofc() -> None:
    """vgg8b_nofc in the backbone registry of this process only (the package is unchanged)."""
    if NOFC not in BACKBONES:
        spec = get_backbone(BACKBONE)
        assert isinstance(spec, VGGSpec)
        BACKBONES.add(NOFC, VGGSpec(NOFC, spec.cfg, hidden_fc=0))


@contextmanager
def plain_momentum(on: bool) -> Iterator[None]:
    """SGD with heavy-ball momentum instead of Nesterov's (the package turns Nesterov on
    whenever momentum > 0): swaps the optimiser factory the stepper imported, for one run."""
    import bwbpf.trainers.stepper as stepper

    if not on:
        yield
        return
    original = stepper.make_optimizer

    def sgd(params: list[nn.Parameter], cfg: BlockOptim) -> torch.optim.Optimizer:
        assert cfg.optimizer == "sgd"
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=False,
                               weight_decay=cfg.weight_decay)

    stepper.make_optimizer = sgd
    try:
        yield
    finally:
        stepper.make_optimizer = original


def decouplings(backbone: str) -> dict[str, Decoupling]:
    opt = BlockOptim(lr=LR)
    return {"BP": Decoupling.end_to_end(backbone, width=WIDTH, optim=opt),
            "K=3": Decoupling(backbone, CUTS, HEADS, (opt,) * 3, width=WIDTH)}


def train(v: Variant, d: Decoupling, data: Data, epochs: int, seed: int) -> dict:
    plan = TrainPlan(epochs=epochs, seed=seed, device="cpu", augment=v.augment,
                     lr_schedule=v.lr_schedule)  # type: ignore[arg-type]
    net = build(d, data.num_classes, data.in_channels, data.image_size, seed=seed)
    start = time.perf_counter()
    with plain_momentum(not v.nesterov):
        r = fit(net, data, plan)
    seconds = time.perf_counter() - start
    test = evaluate(net, data.test, plan)
    return {"test": test[-1], "blocks": test, "val": r.val_accuracy, "seconds": seconds}


def run(v: Variant, data: Data, epochs: int, seed: int) -> dict:
    row: dict = {"variant": v, "seed": seed}
    for mode, d in decouplings(v.backbone).items():
        r = train(v, d, data, epochs, seed)
        row[mode] = r
        blocks = " / ".join(f"{a:.4f}" for a in r["blocks"])
        print(f"  ({v.key}) seed {seed} {mode:3s} test {r['test']:.4f} (heads {blocks}) "
              f"val {r['val']:.4f}  {r['seconds']:.0f} s", flush=True)
    return row


def table(rows: list[dict]) -> str:
    out = ["| variant | seed | BP | K=3 | gap (points) | seconds (BP + K=3) |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        bp, k3, v = r["BP"], r["K=3"], r["variant"]
        out.append(f"| ({v.key}) {v.label} | {r['seed']} | {bp['test']:.4f} | {k3['test']:.4f} "
                   f"| {100 * (k3['test'] - bp['test']):+.2f} | "
                   f"{bp['seconds']:.0f} + {k3['seconds']:.0f} |")
    seeds = {r["seed"] for r in rows}
    if len(seeds) > 1:
        out += ["", "| variant | seeds | BP mean | K=3 mean | gap (points) |",
                "|---|---|---|---|---|"]
        for v in VARIANTS:
            mine = [r for r in rows if r["variant"] == v]
            if len(mine) < 2:
                continue
            bp = statistics.mean(r["BP"]["test"] for r in mine)
            k3 = statistics.mean(r["K=3"]["test"] for r in mine)
            out.append(f"| ({v.key}) {v.label} | {len(mine)} | {bp:.4f} | {k3:.4f} | "
                       f"{100 * (k3 - bp):+.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--subset", type=int, default=20000, help="training images")
    p.add_argument("--val-size", type=int, default=2000, help="held out of train")
    p.add_argument("--variants", default="abcde", help="which of a-e run on seed 0")
    p.add_argument("--extra-seeds", default="1", help="comma list; '' for none")
    p.add_argument("--extra-variants", default="bcd", help="which variants the extra seeds run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="synthetic data, 300 images, 1 epoch")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    register_nofc()
    if a.tiny:
        a.epochs, a.subset, a.val_size = 1, 300, 200
    dataset = "synthetic" if a.tiny else "fashion-mnist"
    data = load_data(dataset, device=torch.device("cpu"), val_size=a.val_size,
                     train_subset=a.subset, seed=0, download=False)
    began = time.strftime("%Y-%m-%d %H:%M:%S")
    start = time.perf_counter()
    print(f"setup study: {dataset}, {len(data.train)} training images, {a.epochs} epochs, "
          f"{BACKBONE} x{WIDTH}, lr {LR}, K=3 cuts {CUTS} conv heads (widths 2, 1), test split "
          f"of {len(data.test)}; {torch.get_num_threads()} torch threads, torch "
          f"{torch.__version__}; started {began}", flush=True)
    by_key = {v.key: v for v in VARIANTS}
    jobs = [(by_key[k], 0) for k in a.variants]
    jobs += [(by_key[k], int(s)) for s in a.extra_seeds.split(",") if s.strip()
             for k in a.extra_variants]
    rows: list[dict] = []
    for i, (v, seed) in enumerate(jobs):
        rows.append(run(v, data, a.epochs, seed))
        if 0 < i + 1 < len(jobs) and jobs[i + 1][1] != seed:  # the seed's table, in case the
            print("\n" + table(rows) + "\n", flush=True)  # run is stopped before the end
    minutes = (time.perf_counter() - start) / 60
    print(f"\nCommand: `{' '.join(['python', *sys.argv])}`; started {began}, finished "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({minutes:.1f} min)\n", flush=True)
    print(table(rows), flush=True)


if __name__ == "__main__":
    main()
