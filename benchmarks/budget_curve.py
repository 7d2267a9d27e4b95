"""A backbone's budget curve: end-to-end BP against its constrained winners at 1, 3, 10 and 30
epochs, with every block's accuracy through its own head. Fashion-MNIST on this CPU machine;
hours: run it in the background.

    .venv/bin/python benchmarks/budget_curve.py --backbone resnet18
    .venv/bin/python benchmarks/budget_curve.py --tiny

At the Quality rows' set-up (10,000 training images, the test split, seeds 0 and 1, the
search's augmentation and schedule), for the backbone's rows in benchmarks/quality.json: BP at
its swept learning rate, the constrained search's winner ("searched, new space") and the same
winner with every head PredSim's pooled linear one. Two levers for a last block that adds
little: the winner with every head a ``momentum`` one (MAN: moving-average copies of the next
unit, depth 1, each block's loss kept) and the winner with its last block's learning rate
doubled. The levers run at every budget but the last, and at the last only if they beat the
winner at the one before. Every row states its speed-up over BP and memory ratio by FLOPs.
Every finished training is kept in OUT/out/budget-curve-runs.json, so a stopped run continues;
OUT/budget_curve.json is rewritten after every point.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from common import Runs, long_run_parser, long_run_start, train_and_test

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, SearchSpace, build
from bwbpf.trainers import load_data
from bwbpf.trainers.cost import measure_cost

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Budget:
    dataset: str
    train_subset: int
    epochs: tuple[int, ...]
    seeds: tuple[int, ...]
    val_size: int = 1000
    batch: int = 128
    augment: bool = SearchSpace.augment
    lr_schedule: str = SearchSpace.lr_schedule


FULL = Budget("fashion-mnist", 10000, (1, 3, 10, 30), (0, 1))
TINY = replace(FULL, dataset="synthetic", train_subset=256, epochs=(1, 2), seeds=(0,),
               val_size=64, batch=32)


LEVERS = ("searched, momentum heads", "searched, last block lr x2")


def contenders(backbone: str, tiny: bool) -> dict[str, Decoupling]:
    if tiny:
        bp = Decoupling.end_to_end(backbone, width=0.125, optim=BlockOptim(lr=0.05))
        won = Decoupling.paper_default(backbone, width=0.125)
    else:
        rows = [r for r in json.loads((HERE / "quality.json").read_text())["rows"]
                if r["backbone"] == backbone]
        by = {r["row"]: Decoupling.from_dict(r["decoupling"]) for r in rows}
        bp, won = by["backprop"], by["searched, new space"]
    last = replace(won.optim[-1], lr=2 * won.optim[-1].lr)
    return {"backprop": bp, "searched": won, "searched, pool_linear heads": pool_linear(won),
            LEVERS[0]: replace(won, aux=tuple(AuxSpec("momentum", 1, loss=a.loss)
                                              for a in won.aux)),
            LEVERS[1]: replace(won, optim=(*won.optim[:-1], last))}


def pool_linear(d: Decoupling) -> Decoupling:
    return replace(d, aux=tuple(AuxSpec("pool_linear", loss=a.loss) for a in d.aux))


def flops_ratios(d: Decoupling, data: Any) -> tuple[float, float]:
    """(speed-up over BP, memory ratio) by FLOPs and saved activations."""
    if d.num_blocks == 1:
        return 1.0, 1.0
    c = measure_cost(build(d, data.num_classes, data.in_channels, data.image_size),
                     data.in_channels, data.image_size)
    return c.speedup, c.memory_ratio


def main() -> int:
    ap = long_run_parser(__doc__, HERE)
    ap.add_argument("--backbone", default="resnet18")
    args = ap.parse_args()
    cache = long_run_start(args)
    b = TINY if args.tiny else FULL
    runs = Runs(cache / "budget-curve-runs.json")
    data = load_data(b.dataset, train_subset=b.train_subset, val_size=b.val_size, seed=0,
                     download=False)

    def train(d: Decoupling, epochs: int, seed: int) -> dict[str, Any]:
        key = json.dumps([d.to_dict(), epochs, seed, asdict(b)], sort_keys=True)

        def run() -> dict[str, Any]:
            return train_and_test(data, d, epochs=epochs, seed=seed, batch=b.batch,
                                  augment=b.augment, lr_schedule=b.lr_schedule)

        return dict(runs.get(key, run))

    points: list[dict[str, Any]] = []
    everyone = contenders(args.backbone, args.tiny)
    ratios = {name: flops_ratios(d, data) for name, d in everyone.items()}
    for epochs in b.epochs:  # one budget at a time: the cheap ones are there early
        point: dict[str, Any] = {"epochs": epochs}
        for name, d in everyone.items():
            if name in LEVERS and epochs == b.epochs[-1] and points and (
                    points[-1][name]["mean"] <= points[-1]["searched"]["mean"]):
                continue  # a lever that did not beat the winner at the budget before
            got = [train(d, epochs, s) for s in b.seeds]
            point[name] = {"test": [g["test"] for g in got],
                           "mean": statistics.mean(g["test"] for g in got),
                           "blocks": [statistics.mean(g["blocks"][k] for g in got)
                                      for k in range(d.num_blocks)],
                           "speedup_flops": ratios[name][0], "memory": ratios[name][1],
                           "diverged": [g["diverged"] for g in got if "diverged" in g]}
        points.append(point)
        bp = point["backprop"]["mean"]
        print(f"{args.backbone} {epochs:3d} epochs: BP {bp:.4f}  " + "  ".join(
            f"{n} {p['mean']:.4f} ({p['mean'] - bp:+.4f}; blocks "
            f"{'/'.join(f'{x:.3f}' for x in p['blocks'])}; {p['speedup_flops']:.2f}x, "
            f"memory {p['memory']:.2f}{''.join(f'; diverged: {w}' for w in p['diverged'])})"
            for n, p in point.items() if n not in ("epochs", "backprop")), flush=True)
        (args.out / "budget_curve.json").write_text(json.dumps(
            {"backbone": args.backbone, "budget": asdict(b), "points": points,
             "written": time.strftime("%Y-%m-%d %H:%M %Z")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
