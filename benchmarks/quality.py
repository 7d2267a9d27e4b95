"""Does the search close the gap to BP under constraints, and does the gap close as the budget
grows? Fashion-MNIST on this CPU machine; hours: run it in the background.

    .venv/bin/python benchmarks/quality.py            # the real run (make quality)
    .venv/bin/python benchmarks/quality.py --tiny     # synthetic data, a minute (make test)
    .venv/bin/python benchmarks/quality.py --render   # rewrite the section from quality.json

Every searched decoupling must meet the constraints (speed-up over BP >= 2 measured, activation
memory <= 0.6 of BP's). Rows per backbone: BP with its learning rate swept on validation; the
BWBPF paper's decoupling; the best of the old space (the heads and losses before downstream
heads and the infopro loss, no channel floor); the best of the new (default) space; the VGG
winner transferred to VGG-16. Then the budget curve: BP and the new space's winner at 1, 3, 10
and 30 epochs on one fixed subset, over seeds. Winners are the studies' best after
confirmation over a second seed (search.run.confirm).

Every finished training is kept in OUT/out/quality-runs.json and every study in
OUT/out/quality.db, so a run that stops continues where it stopped when started again. The
tables (OUT/quality.md), quality.json and quality_budget.png (a headless Chromium draws the
plotly figure) are rewritten after every stage, with what is done so far; docs/results.md
quotes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from common import Runs, train_and_test

from bwbpf.reports.record import TrialRecord, best_trial, describe_counts, state_counts
from bwbpf.search.run.runner import run_search
from bwbpf.search.study.settings import CostModel, SearchSettings
from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, SearchSpace, build
from bwbpf.spaces.space import LrSchedule
from bwbpf.trainers import load_data, measure_cost
from bwbpf.trainers.timing import StepTimer

HERE = Path(__file__).resolve().parent
MB = 2**20
CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class Budget:
    dataset: str
    width: float
    search_subset: int  # training images per search trial
    search_epochs: int
    min_epochs: int  # first epoch a trial may be pruned at (one-cycle's epoch 1 is warm-up noise)
    n_trials: int  # per study (the references and BP's sweep come on top)
    train_subset: int  # training images of every row and of the budget curve
    epochs: int  # of the table's rows
    val_size: int
    seeds: tuple[int, ...]
    bp_lrs: tuple[float, ...]
    curve: tuple[int, ...]  # epochs of the budget curve
    curve_seeds: tuple[int, ...]
    min_speedup: float = 2.0
    max_memory: float = 0.6
    batch: int = 128
    augment: bool = SearchSpace.augment  # the search's defaults, for every row
    lr_schedule: LrSchedule = SearchSpace.lr_schedule
    # searched on -> transferred to (same family)
    pairs: tuple[tuple[str, str | None], ...] = (("vgg8b", "vgg16"), ("resnet18", None))
    curve_backbone: str = "vgg8b"
    confirm_top: int = 2  # searched trials confirmed on confirm_seeds more seeds
    confirm_seeds: int = 1
    # The search's constraints read measured step times; the tiny run reads FLOPs, which do not
    # depend on what else the machine is doing (its studies are too small to survive noise).
    cost_model: CostModel = "measured"


FULL = Budget("fashion-mnist", 0.25, 3000, 3, 2, 30, 10000, 3, 1000, (0, 1), (0.025, 0.05, 0.1),
              (1, 3, 10, 30), (0, 1))
TINY = replace(FULL, dataset="synthetic", width=0.125, search_subset=300, search_epochs=1,
               min_epochs=1, n_trials=2, train_subset=300, epochs=1, val_size=100, seeds=(0, 1),
               bp_lrs=(0.05,), curve=(1, 2), curve_seeds=(0,), batch=64,
               pairs=(("vgg8b", "vgg16"),), min_speedup=1.2, max_memory=0.9, confirm_top=1,
               cost_model="flops")

LEVER = "new space's winner, pool_linear heads"
ROWS = ["backprop", "paper (BP-free)", "searched, old space", "searched, new space", LEVER]
# The space as it was before downstream heads, the infopro loss and the channel floor.
OLD_SPACE = {"heads": ("linear", "conv", "mlp_sr", "ir"), "losses": ("pred", "predsim"),
             "head_min_channels": 0}


class Quality:
    def __init__(self, b: Budget, out: Path) -> None:
        self.b, self.out = b, out
        work = out / "out"
        work.mkdir(parents=True, exist_ok=True)
        self.runs = Runs(work / "quality-runs.json")
        self.db = work / "quality.db"
        self.storage = f"sqlite:///{self.db}"
        self.data = load_data(b.dataset, train_subset=b.train_subset, val_size=b.val_size,
                              seed=0, download=False)
        self.timer = StepTimer(torch.device("cpu"), b.batch, in_channels=self.data.in_channels,
                               image_size=self.data.image_size,
                               num_classes=self.data.num_classes)
        self.rows: list[dict[str, Any]] = []
        self.curve: list[dict[str, Any]] = []
        self.searches: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()

    # ------------------------------------------------------------ training
    def train(self, d: Decoupling, epochs: int, seed: int, detach: bool = True
              ) -> dict[str, Any]:
        b = self.b
        key = json.dumps([d.to_dict(), epochs, seed, detach, b.dataset, b.train_subset,
                          b.val_size, b.batch, b.augment, b.lr_schedule], sort_keys=True)

        def run() -> dict[str, Any]:
            return train_and_test(self.data, d, epochs=epochs, seed=seed, batch=b.batch,
                                  augment=b.augment, lr_schedule=b.lr_schedule, detach=detach)

        return dict(self.runs.get(key, run))

    def costs(self, d: Decoupling) -> dict[str, float]:
        if d.num_blocks == 1:
            return {"speedup": 1.0, "speedup_flops": 1.0, "memory": 1.0}
        net = build(d, self.data.num_classes, self.data.in_channels, self.data.image_size)
        cost = measure_cost(net, self.data.in_channels, self.data.image_size)
        return {"speedup": self.timer.predict(d).speedup, "speedup_flops": cost.speedup,
                "memory": cost.memory_ratio}

    def bp(self, backbone: str) -> Decoupling:
        """End-to-end BP with the learning rate of the sweep's best validation accuracy
        (seed 0, the rows' epochs)."""
        best: tuple[float, Decoupling] | None = None
        for lr in self.b.bp_lrs:
            d = Decoupling.end_to_end(backbone, width=self.b.width, optim=BlockOptim(lr=lr))
            val = self.train(d, self.b.epochs, self.b.seeds[0])["val"]
            if best is None or val > best[0]:
                best = (val, d)
        assert best is not None
        return best[1]

    def row(self, name: str, backbone: str, d: Decoupling, note: str = "") -> dict[str, Any]:
        runs = [self.train(d, self.b.epochs, s) for s in self.b.seeds]
        tests = [r["test"] for r in runs]
        costs = self.costs(d)
        r = {"backbone": backbone, "row": name, "K": d.num_blocks, "cuts": list(d.cuts),
             "heads": [f"{a.family}/{a.loss}" for a in d.aux], "test": tests,
             "mean": statistics.mean(tests),
             "std": statistics.stdev(tests) if len(tests) > 1 else 0.0, **costs,
             "feasible": d.num_blocks == 1 or (costs["speedup"] >= self.b.min_speedup
                                               and costs["memory"] <= self.b.max_memory),
             "note": note, "diverged": [x["diverged"] for x in runs if "diverged" in x],
             "decoupling": d.to_dict()}
        print(f"  {backbone:9s} {name:28s} test {r['mean']:.4f} +- {r['std']:.4f}  "
              f"speed-up {costs['speedup']:.2f}x memory {costs['memory']:.2f}"
              + "".join(f"  diverged: {why}" for why in r["diverged"]), flush=True)
        self.rows.append(r)
        return r

    # ------------------------------------------------------------ searching
    def search(self, backbone: str, label: str, **space: Any) -> Decoupling:
        b = self.b
        s = SearchSettings(
            study=f"{backbone}-{label}", storage=self.storage, dataset=b.dataset,
            download=False, train_subset=b.search_subset, val_size=b.val_size,
            epochs=b.search_epochs, min_epochs=b.min_epochs, n_trials=b.n_trials,
            batch_size=b.batch, bp_lrs=b.bp_lrs,
            device="cpu", quiet=True, confirm_top=b.confirm_top, confirm_seeds=b.confirm_seeds,
            cost_model=b.cost_model,
            space=SearchSpace(backbones=(backbone,), width=b.width, min_speedup=b.min_speedup,
                              max_memory=b.max_memory, augment=b.augment,
                              lr_schedule=b.lr_schedule, **space))

        def run() -> dict[str, Any]:
            start = time.perf_counter()
            study = run_search(s)
            best = best_trial(study)
            assert best is not None, f"{s.study}: no feasible trial"
            rec = TrialRecord.of(best)
            return {"study": s.study, "trial": best.number, "minutes":
                    (time.perf_counter() - start) / 60, "trials": len(study.trials),
                    "val": best.values[0], "states": describe_counts(state_counts(study)),
                    "decoupling": rec.document}

        # everything that decides what the search finds (a changed one searches again)
        key = json.dumps({"space": asdict(s.space), "epochs": s.epochs,
                          "min_epochs": s.min_epochs, "trials": s.n_trials,
                          "dataset": s.dataset, "train_subset": s.train_subset,
                          "val_size": s.val_size, "batch": s.batch_size,
                          "cost_model": s.cost_model}, default=str)
        found = self.runs.get(f"search {s.study} {key}", run)
        self.searches[s.study] = {k: v for k, v in found.items() if k != "decoupling"}
        d = Decoupling.from_json(json.dumps(found["decoupling"]))
        print(f"  searched {s.study}: trial {found['trial']} ({found['minutes']:.0f} min), "
              f"K={d.num_blocks}, cuts {d.cuts}, heads {[a.family for a in d.aux]}", flush=True)
        return d

    def trial_states(self, study: str) -> str:
        """What the study's trials came to, e.g. "21 complete, 9 pruned, 42 rejected by the
        constraints" (samples rejected untrained show how much the constraints narrow the
        space): as recorded when the search ended, else read from the study if it is here."""
        recorded = self.searches.get(study, {}).get("states")
        if recorded:
            return str(recorded)
        if not self.db.exists():  # a results folder without its studies
            return "trial states not recorded"
        found = optuna.load_study(study_name=study, storage=self.storage)
        states = describe_counts(state_counts(found))
        self.searches.setdefault(study, {})["states"] = states
        return states

    # ------------------------------------------------------------ the budget curve
    def budget_curve(self, backbone: str, bp: Decoupling, best: Decoupling,
                     epochs: tuple[int, ...]) -> None:
        for e in epochs:
            point: dict[str, Any] = {"epochs": e}
            for name, d in (("bp", bp), ("best", best)):
                runs = [self.train(d, e, s) for s in self.b.curve_seeds]
                point[name] = [r["test"] for r in runs]
                point[f"{name}_blocks"] = [statistics.mean(r["blocks"][k] for r in runs)
                                           for k in range(d.num_blocks)]
                point[f"{name}_seconds"] = statistics.mean(r["seconds"] for r in runs)
            gap = statistics.mean(point["best"]) - statistics.mean(point["bp"])
            print(f"  curve {backbone} {e:3d} epochs: BP {statistics.mean(point['bp']):.4f} "
                  f"best {statistics.mean(point['best']):.4f} ({gap:+.4f})", flush=True)
            self.curve = [p for p in self.curve if p["epochs"] != e] + [point]

    # ------------------------------------------------------------ the whole experiment
    def experiment(self, write: Callable[[], None]) -> None:
        """The most telling results first (the new space against BP, then the budget curve),
        so a run stopped early has them; the table is ordered when it is written."""
        b = self.b
        for source, target in b.pairs:
            new = self.search(source, "new")
            bp = self.bp(source)
            self.row("backprop", source, bp, note=f"lr {bp.optim[0].lr:g} (sweep on val)")
            self.row("searched, new space", source, new)
            # The lever: the winner's cuts and rates with every head PredSim's pooled linear
            # one (as cheap as linear, which a small search under constraints tends to pick).
            self.row(LEVER, source, pool_linear_heads(new), note="heads swapped")
            write()
            if source == b.curve_backbone:
                for e in b.curve:  # one budget at a time: the results are written after each
                    self.budget_curve(source, bp, new, (e,))
                    write()
            self.row("paper (BP-free)", source, Decoupling.paper_default(source, width=b.width))
            write()  # before the next search, so a run stopped during it keeps this row
            self.row("searched, old space", source, self.search(source, "old", **OLD_SPACE))
            write()
            if target is not None:
                bp_t = self.bp(target)
                self.row("backprop", target, bp_t, note=f"lr {bp_t.optim[0].lr:g} (sweep on val)")
                self.row("paper (BP-free)", target,
                         Decoupling.paper_default(target, width=b.width))
                self.row(f"searched on {source}, new space", target, new.transfer(target),
                         note="transferred")
                write()


def pool_linear_heads(d: Decoupling) -> Decoupling:
    return replace(d, aux=tuple(AuxSpec("pool_linear", loss=a.loss) for a in d.aux))


# ---------------------------------------------------------------- writing
def markdown(q: Quality, command: str, when: str) -> str:
    b = q.b
    minutes = (time.perf_counter() - q.started) / 60
    out = ["## Quality", "",
           f"{b.dataset}, width {b.width}, constraints: speed-up over BP >= {b.min_speedup:g} "
           f"({'measured step times' if b.cost_model == 'measured' else 'FLOPs'}), "
           f"activation memory <= {b.max_memory:g} of BP's; "
           f"augmentation {'on' if b.augment else 'off'}, lr schedule {b.lr_schedule}. "
           f"Search: {b.n_trials} trials x "
           f"{b.search_epochs} epochs on {b.search_subset} images (TPE + Hyperband, "
           f"pruning from epoch {b.min_epochs}), the top "
           f"{b.confirm_top} confirmed on {b.confirm_seeds} more seed(s). Rows: {b.epochs} "
           f"epochs on {b.train_subset} images, "
           f"batch {b.batch}, seeds {list(b.seeds)}, the test split; validation: {b.val_size} "
           f"images held out of train. Command: `{command}` ({minutes:.0f} min in this run on "
           f"{os.cpu_count()} cores; finished trainings are reused from earlier runs; "
           f"written {when}).", "",
           "| backbone | decoupling | K | heads/losses | test accuracy (mean +- std) | "
           "speed-up over BP (measured; FLOPs) | memory / BP's | meets constraints | note |",
           "|---|---|---|---|---|---|---|---|---|"]
    order = list(dict.fromkeys(r["backbone"] for r in q.rows))
    rows = sorted(q.rows, key=lambda r: (order.index(r["backbone"]), ROWS.index(r["row"])
                                         if r["row"] in ROWS else len(ROWS)))
    for r in rows:
        out.append(f"| {r['backbone']} | {r['row']} | {r['K']} | {', '.join(r['heads'])} | "
                   f"{r['mean']:.4f} +- {r['std']:.4f} | {r['speedup']:.2f}; "
                   f"{r['speedup_flops']:.2f} | {r['memory']:.2f} | "
                   f"{'yes' if r['feasible'] else 'no'} | {r['note']} |")
    if q.searches:
        out += ["", "Searches: " + "; ".join(
            f"{name}: best trial {s['trial']} of {s['trials']} ({q.trial_states(name)}; "
            f"val {s['val']:.4f}, {s['minutes']:.0f} min)"
            for name, s in q.searches.items()) + "."]
    if q.curve:
        out += ["", f"Budget curve ({b.curve_backbone}, {b.train_subset} images, seeds "
                f"{list(b.curve_seeds)}, test split; plot: quality_budget.png):", "",
                "| epochs | BP | best constrained decoupling | gap (points) | "
                "per-block test accuracy of the decoupling | seconds BP / decoupling |",
                "|---|---|---|---|---|---|"]
        for p in sorted(q.curve, key=lambda p: p["epochs"]):
            gap = 100 * (statistics.mean(p["best"]) - statistics.mean(p["bp"]))
            out.append(f"| {p['epochs']} | {_ms(p['bp'])} | {_ms(p['best'])} | {gap:+.2f} | "
                       f"{', '.join(f'{a:.3f}' for a in p['best_blocks'])} | "
                       f"{p['bp_seconds']:.0f} / {p['best_seconds']:.0f} |")
    out += ["", *verdicts(q), ""]
    return "\n".join(out)


def _ms(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} +- {sd:.4f}"


def verdicts(q: Quality) -> list[str]:
    lines = []
    for backbone in dict.fromkeys(r["backbone"] for r in q.rows):
        mine = {r["row"]: r for r in q.rows if r["backbone"] == backbone}
        bp = mine.get("backprop")
        for name, r in mine.items():
            if bp is not None and name != "backprop":
                lines.append(f"- {backbone}, {name} (K={r['K']}): "
                             f"{100 * (r['mean'] - bp['mean']):+.2f} points against BP")
    if q.curve:
        last = max(q.curve, key=lambda p: p["epochs"])
        gap = 100 * (statistics.mean(last["best"]) - statistics.mean(last["bp"]))
        met = "met" if gap >= -0.5 else "missed"
        lines.append(f"- Target (within 0.5 points of BP at the longest budget): {met} at "
                     f"{last['epochs']} epochs ({gap:+.2f} points)"
                     + ("" if last["epochs"] == max(q.b.curve) else
                        f"; the {max(q.b.curve)}-epoch point is not run yet"))
    return lines


def plot(q: Quality, path: Path) -> bool:
    """The budget curve as a PNG, drawn by plotly in a headless Chromium; False without one."""
    from plotly.subplots import make_subplots

    chromium = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if not q.curve or chromium is None:
        return False
    pts = sorted(q.curve, key=lambda p: p["epochs"])
    epochs = [p["epochs"] for p in pts]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "the net's test accuracy", "where the decoupling loses it: each block's test accuracy"))
    for name, label in (("bp", "end-to-end BP"), ("best", "best constrained decoupling")):
        fig.add_scatter(x=epochs, y=[statistics.mean(p[name]) for p in pts], name=label,
                        error_y={"array": [statistics.stdev(p[name]) if len(p[name]) > 1 else 0
                                           for p in pts]}, mode="lines+markers", row=1, col=1)
    blocks = len(pts[0]["best_blocks"])
    for k in range(blocks):  # blocks before the last are read through their aux heads
        fig.add_scatter(x=epochs, y=[p["best_blocks"][k] for p in pts], mode="lines+markers",
                        name=f"block {k + 1}" + (" (the net)" if k == blocks - 1 else
                                                 " (its aux head)"), row=1, col=2)
    fig.update_xaxes(type="log", title="epochs", tickvals=epochs)
    fig.update_yaxes(title="test accuracy", col=1)
    fig.update_layout(title=f"{q.b.curve_backbone} x{q.b.width:g}, {q.b.dataset}, "
                      f"{q.b.train_subset} images: test accuracy against epochs",
                      width=1200, height=520)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "curve.html"
        fig.write_html(html, include_plotlyjs=True, full_html=True,
                       config={"staticPlot": True})
        shot = Path(tmp) / "curve.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--window-size=1200,520",
                        "--virtual-time-budget=10000", f"--screenshot={shot}", html.as_uri()],
                       capture_output=True, timeout=120, check=False)
        if not shot.exists():
            return False
        shutil.copyfile(shot, path)
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the Quality section from an existing quality.json")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/)")
    args = ap.parse_args()
    b = TINY if args.tiny else FULL
    out = args.out or HERE
    command = ".venv/bin/python benchmarks/quality.py" + (" --tiny" if args.tiny else "")
    q = Quality(b, out)

    def write() -> None:
        when = time.strftime("%Y-%m-%d %H:%M %Z")
        text = markdown(q, command, when)  # first: it completes q.searches from the studies
        (out / "quality.json").write_text(json.dumps(
            {"budget": asdict(b), "rows": q.rows, "curve": q.curve, "searches": q.searches,
             "written": when}, indent=1))
        drawn = plot(q, out / "quality_budget.png")
        if q.curve and not drawn:
            text += "\n(no Chromium here: quality_budget.png was not drawn)\n"
        (out / "quality.md").write_text(text)

    if args.render:
        before = json.loads((out / "quality.json").read_text())
        q.rows, q.curve, q.searches = before["rows"], before["curve"], before["searches"]
    else:
        q.experiment(write)
    write()
    print((out / "quality.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
