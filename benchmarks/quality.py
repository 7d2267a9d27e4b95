"""Searched decouplings against BP and the paper's decoupling, and their transfer to deeper
nets: Fashion-MNIST, this CPU machine, about an hour. Writes the Quality section of
benchmarks/RESULTS.md and benchmarks/quality.json.

    .venv/bin/python benchmarks/quality.py            # the real run (make quality)
    .venv/bin/python benchmarks/quality.py --tiny     # synthetic data, a minute (make test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bwbpf.reports.record import TrialRecord, best_trial
from bwbpf.search.runner import run_search
from bwbpf.search.settings import SearchSettings
from bwbpf.spaces import BlockOptim, Decoupling, SearchSpace, build
from bwbpf.trainers import Data, TrainPlan, evaluate, fit, load_data, measure_cost

HERE = Path(__file__).resolve().parent
MB = 2**20


@dataclass(frozen=True)
class Budget:
    dataset: str
    width: float
    search_subset: int  # training images per search trial
    search_epochs: int
    n_trials: int
    train_subset: int  # training images for every full-training row
    epochs: int
    val_size: int
    seeds: tuple[int, ...]
    bp_lrs: tuple[float, ...]
    batch: int = 128
    min_units: int = 1  # the space's smallest block, in units
    # searched on -> transferred to (same family, same number of stages)
    pairs: tuple[tuple[str, str | None], ...] = (("vgg8b", None), ("vgg11", "vgg16"),
                                                 ("resnet18", "resnet34"))


FULL = Budget("fashion-mnist", 0.25, 5000, 2, 16, 10000, 3, 2000, (0, 1, 2), (0.02, 0.05, 0.1))
# Round 2, after reading round 1 (see the note under the table): search on the same data and
# epochs as the final training, so the search's validation accuracy is the thing it will be
# judged on, and keep at least two units in a block (SEDONA: a very shallow first block hurts).
ROUND2 = replace(FULL, search_subset=10000, search_epochs=3, min_units=2,
                 pairs=(("vgg11", "vgg16"), ("resnet18", "resnet34")))
TINY = replace(FULL, dataset="synthetic", width=0.125, search_subset=600, search_epochs=1,
               n_trials=3, train_subset=600, epochs=1, val_size=200, seeds=(0, 1),
               bp_lrs=(0.05,), batch=64, pairs=(("vgg11", "vgg13"),))


def plan(b: Budget, seed: int, **kw: Any) -> TrainPlan:
    return TrainPlan(epochs=b.epochs, batch_size=b.batch, seed=seed, device="cpu", **kw)


def train(d: Decoupling, data: Data, b: Budget, seed: int, detach: bool = True) -> dict:
    net = build(d, data.num_classes, data.in_channels, data.image_size, seed=seed)
    r = fit(net, data, plan(b, seed, detach=detach))
    return {"val": r.val_accuracy, "test": evaluate(net, data.test, plan(b, seed))[-1],
            "seconds": r.train_seconds}


def row(name: str, backbone: str, d: Decoupling, data: Data, b: Budget, *, detach: bool = True,
        search_hours: float = 0.0, first: dict | None = None, note: str = "") -> dict:
    runs = [first] if first else []
    runs += [train(d, data, b, s, detach) for s in b.seeds[len(runs):]]
    cost = measure_cost(build(d, data.num_classes, data.in_channels, data.image_size),
                        data.in_channels, data.image_size)
    tests = [r["test"] for r in runs]
    k = d.num_blocks
    print(f"  {backbone:9s} {name:24s} test {statistics.mean(tests):.4f} "
          f"(seeds {', '.join(f'{t:.4f}' for t in tests)})", flush=True)
    return {"backbone": backbone, "row": name, "K": k, "cuts": list(d.cuts),
            "heads": [a.family for a in d.aux], "test": tests,
            "mean": statistics.mean(tests), "std": statistics.pstdev(tests),
            "speedup": cost.speedup if k > 1 else 1.0,
            "peak_mb": (cost.peak_saved_bytes if detach else cost.backprop_saved_bytes)
            * b.batch / MB, "search_cpu_hours": search_hours, "note": note,
            "decoupling": d.to_dict()}


def search(backbone: str, b: Budget, storage: str) -> tuple[Decoupling, float]:
    s = SearchSettings(study=backbone, storage=storage, dataset=b.dataset, download=False,
                       train_subset=b.search_subset, val_size=b.val_size,
                       epochs=b.search_epochs, n_trials=b.n_trials, batch_size=b.batch,
                       bp_lrs=b.bp_lrs, device="cpu", quiet=True,
                       confirm_top=0,  # the winner is re-trained over seeds below, at full size
                       space=SearchSpace(backbones=(backbone,), width=b.width,
                                         min_units=b.min_units))
    start = time.perf_counter()
    study = run_search(s)
    hours = (time.perf_counter() - start) * torch.get_num_threads() / 3600  # CPU-hours
    best = best_trial(study)
    assert best is not None
    d = TrialRecord.of(best).decoupling()
    assert d is not None
    print(f"  searched {backbone}: trial {best.number}, val {best.values[0]:.4f}, K="
          f"{d.num_blocks}, cuts {d.cuts}, heads {[a.family for a in d.aux]}", flush=True)
    return d, hours


def bp(backbone: str, data: Data, b: Budget) -> tuple[Decoupling, dict]:
    """End-to-end BP with its learning rate tuned on the validation split (seed 0 of each
    sweep point; the winner's run is reused as its seed-0 row)."""
    best: tuple[float, Decoupling, dict] | None = None
    for lr in b.bp_lrs:
        d = Decoupling.end_to_end(backbone, width=b.width, optim=BlockOptim(lr=lr))
        r = train(d, data, b, b.seeds[0])
        if best is None or r["val"] > best[0]:
            best = (r["val"], d, r)
    assert best is not None
    return best[1], best[2]


def searched_only(b: Budget, storage: str, label: str) -> list[dict]:
    """Only the searched rows (and their transfers) of a new search round."""
    data = load_data(b.dataset, train_subset=b.train_subset, val_size=b.val_size, seed=0,
                     download=False)
    rows = []
    for source, target in b.pairs:
        searched, hours = search(source, b, storage)
        rows.append(row(f"searched ({label})", source, searched, data, b, search_hours=hours))
        if target is not None:
            rows.append(row(f"searched on {source} ({label})", target,
                            searched.transfer(target), data, b, search_hours=hours,
                            note="transferred"))
    return rows


def experiment(b: Budget, storage: str) -> list[dict]:
    data = load_data(b.dataset, train_subset=b.train_subset, val_size=b.val_size, seed=0,
                     download=False)
    rows = []
    for source, target in b.pairs:
        searched, hours = search(source, b, storage)
        for backbone in (source, target):
            if backbone is None:
                continue
            bp_d, bp_first = bp(backbone, data, b)
            paper = Decoupling.paper_default(backbone, width=b.width)
            rows.append(row("backprop", backbone, bp_d, data, b, first=bp_first,
                            note=f"lr {bp_d.optim[0].lr:g} (sweep on val)"))
            rows.append(row("paper (BP-free)", backbone, paper, data, b))
            rows.append(row("paper, no detach", backbone, paper, data, b, detach=False,
                            note="as the BWBPF code: deep supervision"))
            if backbone == source:
                rows.append(row("uniform", backbone, Decoupling.uniform(backbone, width=b.width),
                                data, b))
                rows.append(row("searched", backbone, searched, data, b, search_hours=hours))
            else:
                rows.append(row(f"searched on {source}", backbone,
                                searched.transfer(backbone), data, b, search_hours=hours,
                                note="transferred"))
    return rows


def markdown(rows: list[dict], b: Budget, command: str, minutes: float,
             rounds: dict[str, Any] | None = None, when: str = "") -> str:
    out = ["## Quality", "",
           f"{b.dataset}, width {b.width}; search: {b.n_trials} trials x {b.search_epochs} "
           f"epochs on {b.search_subset} images (TPE + Hyperband); every row: {b.epochs} epochs "
           f"on {b.train_subset} images, batch {b.batch}, seeds {list(b.seeds)}, the test "
           f"split; validation: {b.val_size} images held out of train. Command: "
           f"`{command}` ({minutes:.0f} min on {os.cpu_count()} cores, finished {when})."
           , "",
           "| backbone | decoupling | K | test accuracy (mean +- std) | speed-up over BP (FLOPs) "
           "| peak activations (MB/batch) | search CPU-h | note |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['backbone']} | {r['row']} | {r['K']} | {r['mean']:.4f} +- "
                   f"{r['std']:.4f} | {r.get('speedup', float('nan')):.2f} | {r['peak_mb']:.1f} | "
                   f"{r['search_cpu_hours']:.2f} | {r['note']} |")
    for name, r in (rounds or {}).items():
        rb = r["budget"]
        out += ["", f"{name.capitalize()} (`{command} --round2`, {r['minutes']:.0f} min): search "
                f"trials on {rb['search_subset']} images for {rb['search_epochs']} epochs (the "
                f"final rows' data and epochs), blocks of at least {rb['min_units']} units."]
    out += ["", *verdicts(rows), ""]
    return "\n".join(out)


def compare(a: dict, b: dict) -> str:
    """a against b, with the seeds' spread: a gap inside one (pooled) standard deviation of
    the seeds is a tie, not a win."""
    gap = a["mean"] - b["mean"]
    spread = ((a["std"] ** 2 + b["std"] ** 2) / 2) ** 0.5
    if abs(gap) <= spread:
        return f"ties with ({gap:+.4f}, within the seeds' spread of {spread:.4f})"
    return f"{'beats' if gap > 0 else 'loses to'} ({gap:+.4f})"


def verdicts(rows: list[dict]) -> list[str]:
    lines = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = {r["row"]: r for r in rows if r["backbone"] == backbone}
        for name, r in mine.items():
            if name.startswith("searched"):
                lines.append(f"- {backbone}, {name} (K={r['K']}): {compare(r, mine['backprop'])}"
                             f" end-to-end BP; {compare(r, mine['paper (BP-free)'])} the "
                             "paper's decoupling.")
    return lines


def write_results(section: str, path: Path) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if "## Quality" in text:
        head, _, rest = text.partition("## Quality")
        tail = rest.split("\n## ", 1)
        text = head + section + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--round2", action="store_true",
                    help="add round 2's searched rows to an existing quality.json")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the Quality section from an existing quality.json")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/)")
    args = ap.parse_args()
    b = TINY if args.tiny else FULL
    out = args.out or HERE
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.render:
            before = json.loads((out / "quality.json").read_text())
            rows, minutes, rounds = before["rows"], before["minutes"], before.get("rounds", {})
        elif args.round2:
            before = json.loads((out / "quality.json").read_text())
            new = searched_only(ROUND2, f"sqlite:///{tmp}/quality.db", "round 2")
            rows, minutes = before["rows"] + new, before["minutes"]
            rounds = {**before.get("rounds", {}),
                      "round 2": {"budget": asdict(ROUND2),
                                  "minutes": (time.perf_counter() - start) / 60}}
        else:
            rows, rounds = experiment(b, f"sqlite:///{tmp}/quality.db"), {}
            minutes = (time.perf_counter() - start) / 60
    command = ".venv/bin/python benchmarks/quality.py" + (" --tiny" if args.tiny else "")
    order = list(dict.fromkeys(r["backbone"] for r in rows))
    rows.sort(key=lambda r: order.index(r["backbone"]))  # stable: rounds stay in order
    when = before.get("finished", "") if args.render else time.strftime("%Y-%m-%d %H:%M %Z")
    (out / "quality.json").write_text(json.dumps({"budget": asdict(b), "rows": rows,
                                                   "minutes": minutes, "rounds": rounds,
                                                   "finished": when}, indent=1))
    text = markdown(rows, b, command, minutes, rounds, when)
    write_results(text, out / "RESULTS.md")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
