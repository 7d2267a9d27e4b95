"""Transfer evidence: a constrained winner carried to deeper and wider nets. Fashion-MNIST on
this CPU machine; hours: run it in the background.

    .venv/bin/python benchmarks/transfer.py                          # every pair
    .venv/bin/python benchmarks/transfer.py --pairs vgg8b:vgg16      # one pair
    .venv/bin/python benchmarks/transfer.py --tiny                   # synthetic data, a minute

At the Quality rows' set-up (10,000 training images, test split, seeds 0 and 1, the search's
augmentation and schedule, constraints >= 2x over BP and <= 0.6 of its activation memory,
judged by FLOPs, as every study here), for each target net:

- BP, its learning rate swept on the validation split at seed 0;
- the BWBPF paper's decoupling;
- the source's winner by the stage rule (spaces.transfer: same stages and fractions);
- the source's winner by the constraint-keeping rule (search.winners.carry), also with PredSim's
  pooled linear head on every block (is what a transfer loses the placement's or the heads'?);
- the winner of a direct constrained search on the target (DIRECT trials of 3 epochs on
  3,000 images, the default sampler and pruner, no references);
- the winner of a search started from the source's winner (`run --warm-start`, SEEDED trials;
  the rows keep the name "seeded search" they were recorded under).

Each row: test accuracy per seed, per-block accuracies, and its costs on the target (speed-up
by the measured step times and by FLOPs, memory ratio). The source winners are the Quality
searches' (benchmarks/quality.json, "searched, new space"). Every finished training and study
is kept in OUT/out/ (transfer-runs.json, transfer.db), so a stopped run continues; the table is
rewritten into OUT/transfer.json after every row.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from common import Runs, long_run_parser, long_run_start, train_and_test

from bwbpf.reports.record import TrialRecord, ranked
from bwbpf.search.cli import main as cli
from bwbpf.search.winners.carry import carry
from bwbpf.spaces import (
    AuxSpec,
    BlockOptim,
    Decoupling,
    SearchSpace,
    UserError,
    build,
    to_document,
)
from bwbpf.spaces.files import write_text_atomic
from bwbpf.spaces.limits import CostModel, Limits
from bwbpf.trainers import load_data, measure_cost
from bwbpf.trainers.timing import StepTimer

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Budget:
    dataset: str
    width: float
    train_subset: int
    epochs: tuple[int, ...]  # of the rows
    seeds: tuple[int, ...]
    bp_lrs: tuple[float, ...]
    search_subset: int
    search_epochs: int
    direct: int  # trials of the direct search on the target
    seeded: int  # trials of the seeded search
    min_speedup: float = 2.0
    max_memory: float = 0.6
    val_size: int = 1000
    batch: int = 128
    cost_model: CostModel = "measured"
    augment: bool = SearchSpace.augment
    lr_schedule: str = SearchSpace.lr_schedule


# FLOPs judge the constraints: this machine runs other jobs beside, and measured step times
# would move with them (the rows still show the measured speed-up beside).
FULL = Budget("fashion-mnist", 0.25, 10000, (3, 10), (0, 1), (0.025, 0.05, 0.1), 3000, 3, 12, 8,
              cost_model="flops")
TINY = replace(FULL, dataset="synthetic", width=0.125, train_subset=256, epochs=(1,), seeds=(0,),
               bp_lrs=(0.05,), search_subset=128, search_epochs=1, direct=3, seeded=2,
               min_speedup=1.2, max_memory=0.9, val_size=64, batch=32, cost_model="flops")
# (source backbone, target backbone, target width): the pairs, the cheapest first
PAIRS = [("vgg8b", "vgg11", None), ("vgg8b", "vgg16", None), ("vgg8b", "vgg8b", 0.5),
         ("resnet18", "resnet34", None), ("resnet18", "resnet50", None)]


class Transfer:
    def __init__(self, b: Budget, out: Path) -> None:
        self.b, self.out = b, out
        self.runs = Runs(out / "out" / "transfer-runs.json")
        self.storage = f"sqlite:///{out / 'out' / 'transfer.db'}"
        self.data = load_data(b.dataset, train_subset=b.train_subset, val_size=b.val_size,
                              seed=0, download=False)
        self.shape: dict[str, Any] = {"in_channels": self.data.in_channels,
                                      "image_size": self.data.image_size,
                                      "num_classes": self.data.num_classes}
        # measured step times for the rows (FLOPs beside); they judge only under "measured"
        self.clock = StepTimer(torch.device("cpu"), b.batch, **self.shape)
        self.timer = self.clock if b.cost_model == "measured" else None
        self.limits = Limits(b.min_speedup, b.max_memory, b.cost_model)

    def train(self, d: Decoupling, epochs: int, seed: int) -> dict[str, Any]:
        b = self.b
        key = json.dumps([d.to_dict(), epochs, seed, b.dataset, b.train_subset, b.val_size,
                          b.batch, b.augment, b.lr_schedule], sort_keys=True)

        def run() -> dict[str, Any]:
            return train_and_test(self.data, d, epochs=epochs, seed=seed, batch=b.batch,
                                  augment=b.augment, lr_schedule=b.lr_schedule)

        return dict(self.runs.get(key, run))

    def costs(self, d: Decoupling) -> dict[str, float]:
        if d.num_blocks == 1:
            return {"speedup": 1.0, "speedup_flops": 1.0, "memory": 1.0}
        c = measure_cost(build(d, self.data.num_classes, self.data.in_channels,
                               self.data.image_size), self.data.in_channels,
                         self.data.image_size)
        return {"speedup": self.clock.predict(d).speedup, "speedup_flops": c.speedup,
                "memory": c.memory_ratio}

    def row(self, name: str, d: Decoupling, epochs: int, note: str = "") -> dict[str, Any]:
        runs = [self.train(d, epochs, s) for s in self.b.seeds]
        tests = [r["test"] for r in runs]
        c = self.costs(d)
        judged = c["speedup"] if self.b.cost_model == "measured" else c["speedup_flops"]
        feasible = (round(judged, 4) >= self.b.min_speedup
                    and round(c["memory"], 4) <= self.b.max_memory)
        return {"row": name, "epochs": epochs, "K": d.num_blocks, "cuts": list(d.cuts),
                "heads": [f"{a.family}/{a.loss}" for a in d.aux], "test": tests,
                "mean": statistics.mean(tests),
                "blocks": [statistics.mean(b) for b in zip(*(r["blocks"] for r in runs))],
                **c, "feasible": feasible if d.num_blocks > 1 else True, "note": note,
                "diverged": [r["diverged"] for r in runs if "diverged" in r],
                "decoupling": d.to_dict()}

    def bp(self, backbone: str, width: float, epochs: int) -> tuple[Decoupling, float]:
        """BP at the learning rate its sweep on the validation split picks (seed 0)."""

        def at(lr: float) -> Decoupling:
            return Decoupling.end_to_end(backbone, width=width, optim=BlockOptim(lr=lr))

        best = max(self.b.bp_lrs, key=lambda lr: self.train(at(lr), epochs,
                                                            self.b.seeds[0])["val"])
        return at(best), best

    def search(self, name: str, backbone: str, width: float, n: int,
               warm_start: Path | None = None) -> Decoupling:
        """A constrained study on the target (resumed when it exists); its winner."""
        b = self.b
        argv = ["-q", "run", "--storage", self.storage, "--study", name, "--backbone",
                backbone, "--width", str(width), "--dataset", b.dataset, "--train-subset",
                str(b.search_subset), "--val-size", str(b.val_size), "--epochs",
                str(b.search_epochs), "--batch-size", str(b.batch), "--device", "cpu",
                "--min-speedup", str(b.min_speedup), "--max-memory", str(b.max_memory),
                "--cost-model", b.cost_model, "--n-trials", str(n), "--no-baselines",
                "--confirm-top", "0"]
        if warm_start is not None:
            argv += ["--warm-start", str(warm_start)]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = cli(argv)
        if rc == 2:  # refused (bad input: a seed that fits nowhere), one line
            raise UserError(err.getvalue().strip().removeprefix("bwbpf-search: error: "))
        assert rc == 0, f"study {name} failed: {err.getvalue()}"
        sys.stderr.write(err.getvalue())  # the study's warnings, as before
        study = optuna.load_study(study_name=name, storage=self.storage)
        d = TrialRecord.of(ranked(study)[0]).decoupling()
        assert d is not None
        return d


def source_winners(path: Path) -> dict[str, Decoupling]:
    """The Quality searches' constrained winners, by backbone."""
    rows = json.loads(path.read_text())["rows"]
    return {r["backbone"]: Decoupling.from_dict(r["decoupling"]) for r in rows
            if r["row"] == "searched, new space"}


def target(t: Transfer, src: Decoupling, dst: str, width: float | None, epochs: int
           ) -> list[dict[str, Any]]:
    """The target's rows. Where the constraints cannot be kept on the target, the transfer
    and the seeded search are refused (the tool's one line is the row's note)."""
    w = width or src.width
    doc = t.out / "out" / f"source-{src.backbone}.json"
    doc.write_text(json.dumps(to_document(src, constraints=t.limits.section())))
    bp, lr = t.bp(dst, w, epochs)
    tag = f"{dst}x{w:g}"
    rows = []
    try:
        kept = carry(src, t.limits, dst, width, shape=t.shape, timer=t.timer)
    except UserError as e:
        rows.append(refused("constraint-keeping transfer", str(e)))
    else:
        rows.append(t.row("constraint-keeping transfer", kept.decoupling, epochs, kept.line()))
    # where the source's heads fit no placement, the seeding carries one family on every block
    seeded = f"seeded search ({t.b.seeded} trials)"
    try:
        rows.append(t.row(seeded, t.search(f"seeded-{tag}", dst, w, t.b.seeded, doc), epochs))
    except UserError as e:
        rows.append(refused(seeded, str(e)))
    # The same winner with PredSim's pooled linear head on every block: whether the
    # accuracy a transfer loses is the placement's or the source's heads'.
    pooled = replace(src, aux=tuple(AuxSpec("pool_linear", loss=a.loss) for a in src.aux))
    try:
        kept = carry(pooled, t.limits, dst, width, shape=t.shape, timer=t.timer)
        rows.append(t.row("constraint-keeping transfer, pool_linear heads", kept.decoupling,
                          epochs, kept.line()))
    except UserError as e:
        rows.append(refused("constraint-keeping transfer, pool_linear heads", str(e)))
    return rows + [
        t.row("stage-rule transfer", src.transfer(dst, width), epochs),
        t.row("backprop", bp, epochs, f"lr {lr:g} (sweep on val)"),
        t.row("paper", Decoupling.paper_default(dst, width=w), epochs),
        t.row(f"direct search ({t.b.direct} trials)",
              t.search(f"direct-{tag}", dst, w, t.b.direct), epochs)]


def refused(name: str, why: str) -> dict[str, Any]:
    return {"row": name, "refused": why, "test": [], "mean": None, "K": None, "cuts": [],
            "feasible": None, "note": why}


def markdown(results: dict[str, Any]) -> str:
    """The targets as one table: test accuracy (mean over seeds, and the gap to BP), costs on
    the target, and each block's accuracy through its head."""
    lines = ["| target | row | test (seeds) | vs BP | K, cuts | speed-up measured (FLOPs) | "
             "memory | meets | blocks |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results["targets"].items():
        bp = next((r["mean"] for r in rows if r["row"] == "backprop"), None)
        for r in rows:
            if r["mean"] is None:
                lines.append(f"| {name} | {r['row']} | refused | | | | | | {r['note']} |")
                continue
            tests = ", ".join(f"{x:.4f}" for x in r["test"]) + "".join(
                f"; diverged: {why}" for why in r.get("diverged", ()))
            gap = "" if bp is None else f"{r['mean'] - bp:+.4f}"
            blocks = "/".join(f"{x:.3f}" for x in r["blocks"])
            lines.append(f"| {name} | {r['row']} | {r['mean']:.4f} ({tests}) | {gap} | "
                         f"{r['K']}, {r['cuts']} | {r['speedup']:.2f}x "
                         f"({r['speedup_flops']:.2f}x) | {r['memory']:.2f} | "
                         f"{'yes' if r['feasible'] else 'no'} | {blocks} |")
    return "\n".join(lines)


def keep(path: Path, budget: dict[str, Any], name: str, rows: list[dict[str, Any]]) -> None:
    """Write one target's rows into the table at ``path``, keeping the other targets' rows at
    the same budget: those of an earlier run over other pairs, and those another run beside
    this one wrote since it started (the file is read again at every write)."""
    old = json.loads(path.read_text()) if path.exists() else {}
    targets = old.get("targets", {}) if old.get("budget") == budget else {}
    results = {"budget": budget, "targets": {**targets, name: rows},
               "written": time.strftime("%Y-%m-%d %H:%M %Z")}
    write_text_atomic(path, json.dumps(results, indent=1))


def main() -> int:
    ap = long_run_parser(__doc__, HERE)
    ap.add_argument("--pairs", default=None, help="e.g. vgg8b:vgg16,vgg8b:vgg8b@0.5")
    ap.add_argument("--render", action="store_true",
                    help="only print OUT/transfer.json as a markdown table")
    args = ap.parse_args()
    if args.render:
        print(markdown(json.loads((args.out / "transfer.json").read_text())))
        return 0
    long_run_start(args)
    b = TINY if args.tiny else FULL
    pairs = PAIRS[:1] if args.tiny else PAIRS
    if args.pairs:
        pairs = [(s, d.split("@")[0], float(d.split("@")[1]) if "@" in d else None)
                 for s, d in (p.split(":") for p in args.pairs.split(","))]
    t = Transfer(b, args.out)
    if args.tiny:
        sources = {"vgg8b": Decoupling.paper_default("vgg8b", width=b.width)}
    else:
        sources = source_winners(HERE / "quality.json")
    path, budget = args.out / "transfer.json", json.loads(json.dumps(asdict(b)))
    for epochs in b.epochs:  # every pair at the short budget first
        for src, dst, width in pairs:
            rows = target(t, sources[src], dst, width, epochs)
            name = f"{src} -> {dst} x{width or sources[src].width:g}, {epochs} epochs"
            keep(path, budget, name, rows)
            print(name, flush=True)
            for r in rows:
                if r["mean"] is None:
                    print(f"  {r['row']:32s} refused: {r['note']}", flush=True)
                    continue
                print(f"  {r['row']:32s} {r['mean']:.4f}  K={r['K']} cuts {r['cuts']}  "
                      f"{r['speedup']:.2f}x (FLOPs {r['speedup_flops']:.2f}x)  memory "
                      f"{r['memory']:.2f}  {'' if r['feasible'] else 'INFEASIBLE'}"
                      + "".join(f"  diverged: {why}" for why in r["diverged"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
