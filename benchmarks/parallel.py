"""Block-parallel training on this machine's cores: the pipelined schedule (one thread per
block worker) against the sequential one, as a share of the ideal (sum / max of the block times),
and against the best
sequential set-up (intra-op threads on every core); and how well FLOPs predict it. Each time is
the fastest of REPEATS runs, the set-ups compared taking turns.

    .venv/bin/python benchmarks/parallel.py
"""

from __future__ import annotations

import os

import torch
from common import Row, show

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, balanced_cuts, build
from bwbpf.trainers import Data, TrainPlan, fit, load_data, measure_cost, unit_costs, unit_times
from bwbpf.trainers.cost import against_bp, block_sums
from bwbpf.trainers.plan import Schedule

BACKBONE, WIDTH, BATCH, STEPS, REPEATS = "vgg11", 0.5, 128, 40, 4
CORES = os.cpu_count() or 1


def decoupling(cuts: tuple[int, ...]) -> Decoupling:
    k = len(cuts) + 1
    return Decoupling(BACKBONE, cuts, (AuxSpec("conv", 1, 0.5),) * (k - 1),
                      (BlockOptim(lr=0.02),) * k, WIDTH)


def train_seconds(d: Decoupling, data: Data, schedule: Schedule, threads: int
                  ) -> tuple[float, dict]:
    torch.set_num_threads(threads)
    net = build(d, 10, data.in_channels, data.image_size, seed=0)
    plan = TrainPlan(epochs=1, max_steps=STEPS, batch_size=BATCH, device="cpu",
                     schedule=schedule, worker_threads=1 if schedule == "pipelined" else None,
                     augment=False)
    r = fit(net, data, plan)
    return r.train_seconds, net.state_dict()


def fastest(d: Decoupling, data: Data, setups: list[tuple[Schedule, int]], repeats: int = REPEATS
            ) -> list[tuple[float, dict]]:
    """Per (schedule, threads) set-up: the fastest of ``repeats`` runs and its weights. The
    set-ups take turns in every round, so a slow spell on a shared machine hits all of them."""
    times: list[list[float]] = [[] for _ in setups]
    weights: list[dict] = [{} for _ in setups]
    for _ in range(repeats):
        for i, (schedule, threads) in enumerate(setups):
            seconds, weights[i] = train_seconds(d, data, schedule, threads)
            times[i].append(seconds)
    return [(min(t), w) for t, w in zip(times, weights)]


def run() -> list[Row]:
    data = load_data("fashion-mnist", train_subset=BATCH * STEPS, val_size=256,
                     download=False, image_size=32)
    flops, _ = unit_costs(BACKBONE, width=WIDTH, in_channels=1, image_size=(32, 32))
    torch.set_num_threads(1)
    times = unit_times(BACKBONE, width=WIDTH, in_channels=1, image_size=(32, 32), batch=BATCH)
    rows = []
    for k in (2, 4):
        # cuts balanced by measured unit time; the ideal is sum / max of the blocks' costs
        d = decoupling(balanced_cuts(times, k))
        cost = measure_cost(build(d, 10, 1, 32), 1, (32, 32))
        block_t = block_sums(times, d.cuts)
        # no more workers at once than cores
        ideal = min(against_bp(block_t, sum(times)).block_parallelism, CORES)
        (seq1, w_seq), (pipe, w_pipe), (seq_all, _) = fastest(
            d, data, [("sequential", 1), ("pipelined", 1), ("sequential", CORES)])
        same = all(torch.equal(w_seq[n], w_pipe[n]) for n in w_seq)
        speedup = seq1 / pipe
        rows.append(Row(f"K={k} pipelined (1 thread/worker) vs sequential (1 thread) / ideal",
                        speedup / ideal, ">= 0.85",
                        f"{speedup:.2f}x of ideal {ideal:.2f}x (cuts {d.cuts} by unit time; "
                        f"FLOPs say {cost.block_parallelism:.2f}x; {CORES} cores); weights bitwise "
                        f"equal: {same}"))
        rows.append(Row(f"K={k} pipelined vs best sequential ({CORES} intra-op threads)",
                        seq_all / pipe, ">= 1.0", f"{seq_all:.2f} s vs {pipe:.2f} s for {STEPS} "
                        f"steps of {BATCH}"))
    for cuts in ((1,), (2,), (6,)):  # unbalanced K=2: does the FLOP ratio predict the gain?
        d = decoupling(cuts)
        cost = measure_cost(build(d, 10, 1, 32), 1, (32, 32))
        (seq1, _), (pipe, _) = fastest(d, data, [("sequential", 1), ("pipelined", 1)])
        ideal = min(cost.block_parallelism, CORES)
        rows.append(Row(f"K=2 cut at unit {cuts[0]}: measured / FLOP-predicted block parallelism",
                        (seq1 / pipe) / ideal, ">= 0.85",
                        f"measured {seq1 / pipe:.2f}x, FLOPs predict {ideal:.2f}x"))
    torch.set_num_threads(CORES)
    return rows


if __name__ == "__main__":
    show(run())
