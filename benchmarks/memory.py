"""Peak saved-activation bytes BP-free / BP on ResNet-18 (32x32, full width) at K=2 and K=4.
Targets <= 0.6 and <= 0.4 (InfoPro reports 0.57 and 0.37 with memory-balanced cuts).

    .venv/bin/python benchmarks/memory.py
"""

from __future__ import annotations

from common import Row, show

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, balanced_cuts, build
from bwbpf.trainers import measure_cost, unit_costs

SIZE = (32, 32)


def ratio(cuts: tuple[int, ...]) -> tuple[float, float]:
    k = len(cuts) + 1
    d = Decoupling("resnet18", cuts, (AuxSpec(),) * (k - 1), (BlockOptim(),) * k)
    cost = measure_cost(build(d, 10, 3, SIZE), 3, SIZE)
    return cost.memory_ratio, cost.speedup


def run() -> list[Row]:
    _, saved = unit_costs("resnet18", width=1.0, in_channels=3, image_size=SIZE)
    rows = []
    for k, target in ((2, "<= 0.6"), (4, "<= 0.4")):
        cuts = balanced_cuts([float(s) for s in saved], k)
        mem, speed = ratio(cuts)
        rows.append(Row(f"saved activations BP-free / BP, ResNet-18 K={k} (memory-balanced)",
                        mem, target, f"cuts {cuts}, speed-up over BP {speed:.2f}x (FLOPs)"))
    paper = Decoupling.paper_default("resnet18").cuts
    mem, speed = ratio(paper)
    rows.append(Row("saved activations BP-free / BP, ResNet-18 K=4 (paper cuts)", mem, "<= 1.0",
                    f"cuts {paper}, speed-up over BP {speed:.2f}x (FLOPs)"))
    return rows


if __name__ == "__main__":
    show(run())
