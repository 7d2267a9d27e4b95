"""Step time BP-free (sequential) / BP on the same net and batch (target <= 1.15), images/s
of our trainer / a plain PyTorch loop on the same net and data (target >= 1.0), and a
training step in the trainers' memory order (channels_last) / the default one (NCHW), for
four backbones (target <= 1.0: the layout must pay on this device).

    .venv/bin/python benchmarks/step_cost.py
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from common import Row, best_times, show
from torch.utils.data import DataLoader, TensorDataset

from bwbpf.spaces import Decoupling, build
from bwbpf.trainers import Data, TrainPlan, fit, load_data
from bwbpf.trainers.blockwise import Stepper
from bwbpf.trainers.device import nhwc, nhwc_module

BACKBONE, WIDTH, BATCH = "vgg8b", 0.25, 128


def step_ratio(data: Data) -> Row:
    x, y = nhwc(data.train.x[:BATCH]), data.train.y[:BATCH]
    plan = TrainPlan(epochs=1, batch_size=BATCH, device="cpu")
    runs: dict[str, Callable[[], None]] = {}
    for name, d in (("bpfree", Decoupling.paper_default(BACKBONE, width=WIDTH)),
                    ("bp", Decoupling.end_to_end(BACKBONE, width=WIDTH))):
        net = nhwc_module(build(d, 10, data.in_channels, data.image_size, seed=0).train())
        step = Stepper(net, plan, total_steps=10_000)

        def run(step: Stepper = step) -> None:
            for _ in range(5):
                step(x, y)

        runs[name] = run
    times = best_times(runs)
    return Row("step time BP-free (paper K=4, linear heads) / BP", times["bpfree"] / times["bp"],
               "<= 1.15", f"{BACKBONE} x{WIDTH}, batch {BATCH}, 28x28")


def plain_loop(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The usual loop: DataLoader over a TensorDataset, one optimiser, images/s."""
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, drop_last=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    net.train()
    seen, start = 0, time.perf_counter()
    for xb, yb in loader:
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(yb)
    return seen / (time.perf_counter() - start)


def throughput_ratio(data: Data) -> Row:
    d = Decoupling.end_to_end(BACKBONE, width=WIDTH)
    ours, plain = [], []
    for _ in range(3):  # interleaved, best of three each
        net = build(d, 10, data.in_channels, data.image_size, seed=0)
        r = fit(net, data, TrainPlan(epochs=1, batch_size=BATCH, device="cpu", augment=False))
        ours.append(r.images_per_second)
        net = build(d, 10, data.in_channels, data.image_size, seed=0)
        plain.append(plain_loop(net, data.train.x, data.train.y))
    return Row("images/s our trainer (BP) / plain DataLoader loop", max(ours) / max(plain),
               ">= 1.0", f"{max(ours):.0f} vs {max(plain):.0f} img/s, no augmentation")


def layout_ratio(data: Data, backbone: str) -> Row:
    """One BP training step with net and batch in channels_last, against the same in NCHW."""
    x, y = data.train.x[:BATCH], data.train.y[:BATCH]
    plan = TrainPlan(epochs=1, batch_size=BATCH, device="cpu")
    runs: dict[str, Callable[[], None]] = {}
    d = Decoupling.end_to_end(backbone, width=WIDTH)
    for name, module, xb in (("nhwc", nhwc_module, nhwc(x)), ("nchw", lambda m: m, x)):
        net = module(build(d, 10, data.in_channels, data.image_size, seed=0).train())
        step = Stepper(net, plan, total_steps=10_000)

        def run(step: Stepper = step, xb: torch.Tensor = xb) -> None:
            step(xb, y)

        runs[name] = run
    times = best_times(runs)
    return Row(f"BP step channels_last / NCHW, {backbone} x{WIDTH}", times["nhwc"] / times["nchw"],
               "<= 1.0", f"{times['nhwc'] * 1000:.0f} vs {times['nchw'] * 1000:.0f} ms, batch "
               f"{BATCH}, {torch.get_num_threads()} threads")


def run() -> list[Row]:
    data = load_data("fashion-mnist", train_subset=4096, val_size=512, download=False)
    return [step_ratio(data), throughput_ratio(data),
            *(layout_ratio(data, b) for b in ("vgg8b", "resnet18", "vgg16", "resnet50"))]


if __name__ == "__main__":
    show(run())
