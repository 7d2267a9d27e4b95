"""Does searching pay? The default search against random search and against the best
reference, at equal training, under the demo's constraints. Fashion-MNIST on this CPU machine;
hours: run it in the background.

    .venv/bin/python benchmarks/search_efficiency.py                       # both, 3 seeds
    .venv/bin/python benchmarks/search_efficiency.py --backbones vgg8b --seeds 0
    .venv/bin/python benchmarks/search_efficiency.py --tiny                # synthetic, minutes
    .venv/bin/python benchmarks/search_efficiency.py --backbones vgg8b --promote 3,3,10000 \
        --studies-from benchmarks --out benchmarks/promote-3x10000   # another promotion

For each backbone (vgg8b and ResNet-18 at x0.25; >= 2x over BP and <= 0.6 of its activation
memory, judged by FLOPs: other jobs share this machine and would move measured step times) and
each search seed:

- the default search: TPE, Hyperband pruning, every reference, then promotion of the top
  trials and the references (PROMOTE) and confirmation over seeds at that fidelity (CONFIRM);
- random search without pruning, the same references, promotion and confirmation, run to the
  same training as the default search's (image-epochs: training images x epochs, the BP sweep,
  the references, promotion and confirmation counted; it grows trial by trial until its search
  has trained at least as much as the default's did);
- the best reference: the feasible reference the default study ranks first at its highest
  fidelity.

Each of the three winners is then trained at the row budget (ROW: 10 epochs on 10,000 images,
seeds 0 and 1, test split). The rows: the mean over search seeds of the default's winner minus
random search's (target >= +0.003) and minus the best reference's (target >= +0.003); and the
share of random search's search-phase training the default search needed to reach a trial at
least as good as random search's best trial (single seed, trial budget; target <= 0.5). Every
study and training is kept in OUT/out/ (search-efficiency.db, search-efficiency-runs.json): a
stopped run continues where it stopped.

Another promotion, on the same searches: ``--promote TOP,EPOCHS,IMAGES`` with ``--studies-from
DIR`` starts the run from copies of DIR's studies and trainings (DIR/out, left as they are), so
the searches are not trained again and only promotion, confirmation and the rows are. A trial
ranks by its highest fidelity, so the new promotion decides where it is the larger (epochs x
images); the results go to OUT/search_efficiency.json under their own budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from common import Row, Runs, long_run_parser, long_run_start, show

from bwbpf.reports.record import TrialRecord, feasible_trials, ranked
from bwbpf.reports.study_attrs import (
    bp_baselines,
    budget_confirmations,
    confirmations,
    promoted,
)
from bwbpf.search.run.runner import run_search
from bwbpf.search.study.settings import REFERENCES, SearchSettings
from bwbpf.spaces import Decoupling, SearchSpace, build
from bwbpf.trainers import TrainPlan, evaluate, fit, load_data

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Budget:
    dataset: str
    width: float
    subset: int  # the trials' training images
    epochs: int  # a trial's
    trials: int  # the default search's budget
    promote: tuple[int, int, int]  # top N, epochs, images
    confirm: tuple[int, int]  # top N, more seeds
    row: tuple[int, int, tuple[int, ...]]  # epochs, images, seeds
    seeds: tuple[int, ...]  # search seeds
    min_speedup: float = 2.0
    max_memory: float = 0.6
    val_size: int = 1000
    batch: int = 128
    bp_lrs: tuple[float, ...] = (0.025, 0.05, 0.1)
    references: tuple[str, ...] = REFERENCES


# Promotion: twice the epochs on the trials' own images. benchmarks/fidelity.py ranks 16
# decouplings against the row budget at Kendall tau 0.44 (vgg8b) and 0.42 (ResNet-18) after 6
# epochs on 3,000 images, 0.27 and 0.27 after 3 (the trial budget), 0.34 and 0.23 after 3
# epochs on 10,000: more epochs rank better than more images, at less cost.
FULL = Budget("fashion-mnist", 0.25, 3000, 3, 24, (3, 6, 3000), (2, 1), (10, 10000, (0, 1)),
              (0, 1, 2))
TINY = replace(FULL, dataset="synthetic", width=0.125, subset=128, epochs=2, trials=6,
               promote=(1, 2, 256), confirm=(1, 1), row=(1, 256, (0,)), seeds=(0,),
               min_speedup=1.5, max_memory=0.9, val_size=64, batch=32, bp_lrs=(0.05,),
               references=("paper", "uniform"))


def settings(b: Budget, storage: str, name: str, backbone: str, seed: int, *, random: bool,
             n: int, final: bool) -> SearchSettings:
    """One study's run: promotion and confirmation only in the ``final`` run."""
    space = SearchSpace(backbones=(backbone,), width=b.width, min_speedup=b.min_speedup,
                        max_memory=b.max_memory)
    top, epochs, images = b.promote
    return SearchSettings(
        study=name, storage=storage, space=space, dataset=b.dataset, download=False,
        train_subset=b.subset, val_size=b.val_size, epochs=b.epochs, batch_size=b.batch,
        n_trials=n, sampler="random" if random else "tpe",
        pruner="none" if random else "hyperband", device="cpu", seed=seed, quiet=True,
        cost_model="flops", references=b.references, bp_lrs=b.bp_lrs,
        promote_top=top if final else 0, promote_epochs=epochs, promote_subset=images,
        confirm_top=b.confirm[0] if final else 0, confirm_seeds=b.confirm[1]
    )


def search_spent(study: optuna.Study, b: Budget) -> int:
    """Image-epochs of the search phase: every trial's epochs and BP's sweep."""
    trials = sum(len(TrialRecord.of(t).curve) for t in study.get_trials(deepcopy=False))
    bp = sum(len(e.get("curve", ())) for bl in bp_baselines(study).values() for e in bl.sweep)
    return (trials + bp) * b.subset


def after_spent(study: optuna.Study, b: Budget) -> int:
    """Image-epochs of promotion and confirmation."""
    _, epochs, images = b.promote
    out = sum(len(c.seeds) * epochs * images for c in promoted(study, (epochs, images)).values())
    out += sum((len(c.seeds) - 1) * b.epochs * b.subset
               for c in budget_confirmations(study).values())
    return out


def curve(study: optuna.Study, b: Budget) -> list[tuple[int, float]]:
    """(search image-epochs so far, best feasible single-seed accuracy so far), trial by
    trial in the order they were numbered (the BP sweep counted first)."""
    feasible = {t.number for t in feasible_trials(study)}
    bp = sum(len(e.get("curve", ())) for bl in bp_baselines(study).values() for e in bl.sweep)
    spent, best, out = bp * b.subset, 0.0, []
    for t in study.get_trials(deepcopy=False):
        spent += len(TrialRecord.of(t).curve) * b.subset
        if t.number in feasible and t.values:
            best = max(best, t.values[0])
        out.append((spent, best))
    return out


def grown_random(b: Budget, storage: str, name: str, backbone: str, seed: int,
                 target: int) -> tuple[optuna.Study, int]:
    """Random search grown a trial at a time (from one: without pruning each trial trains in
    full, so it gets fewer than the default search) until its search trained ``target``; the
    study and its budget then."""
    n = 1
    while True:
        study = run_search(settings(b, storage, name, backbone, seed, random=True, n=n,
                                    final=False))
        if search_spent(study, b) >= target:
            return study, n
        n += 1


class Rows:
    """Winners trained at the row budget (cached in a JSON file)."""

    def __init__(self, b: Budget, out: Path) -> None:
        self.b, self.runs = b, Runs(out / "search-efficiency-runs.json")
        epochs, images, _ = b.row
        self.data = load_data(b.dataset, train_subset=images, val_size=b.val_size, seed=0,
                              download=False)

    def test(self, d: Decoupling) -> float:
        """Mean test accuracy over the row seeds."""
        epochs, images, seeds = self.b.row
        out = []
        for seed in seeds:
            key = json.dumps([d.to_dict(), epochs, images, seed, self.b.dataset], sort_keys=True)

            def run(seed: int = seed) -> dict[str, Any]:
                net = build(d, self.data.num_classes, self.data.in_channels,
                            self.data.image_size, seed=seed)
                # the Quality rows' and fidelity's recipe: the search's augmentation and
                # schedule (a full training's defaults would judge other arithmetic)
                plan = TrainPlan(epochs=epochs, batch_size=self.b.batch, seed=seed,
                                 device="cpu", augment=SearchSpace.augment,
                                 lr_schedule=SearchSpace.lr_schedule)
                fit(net, self.data, plan)
                return {"test": evaluate(net, self.data.test, plan)[-1]}

            out.append(float(self.runs.get(key, run)["test"]))
        return statistics.mean(out)


def best_reference(study: optuna.Study) -> Decoupling:
    """The feasible reference ranked first (at its highest fidelity)."""
    refs = [t for t in ranked(study) if TrialRecord.of(t).baseline]
    d = TrialRecord.of(refs[0]).decoupling() if refs else None
    assert d is not None, "no feasible reference"
    return d


def one(b: Budget, storage: str, rows: Rows, backbone: str, seed: int) -> dict[str, Any]:
    """One backbone and search seed: the three winners at the row budget, and the training
    each search spent."""
    tag = f"{backbone}-{seed}"
    default = run_search(settings(b, storage, f"default-{tag}", backbone, seed, random=False,
                                  n=b.trials, final=True))
    target = search_spent(default, b)
    random, n = grown_random(b, storage, f"random-{tag}", backbone, seed, target)
    random = run_search(settings(b, storage, f"random-{tag}", backbone, seed, random=True, n=n,
                                 final=True))  # nothing left to search: it promotes, confirms
    winners = {}
    for name, study in (("default", default), ("random", random)):
        d = TrialRecord.of(ranked(study)[0]).decoupling()
        assert d is not None
        winners[name] = d
    winners["reference"] = best_reference(default)
    goal = max(v for _, v in curve(random, b))  # random search's best trial, single seed
    reached = next((spent for spent, v in curve(default, b) if v >= goal), None)
    return {"backbone": backbone, "seed": seed,
            "test": {k: rows.test(d) for k, d in winners.items()},
            "winners": {k: d.to_dict() for k, d in winners.items()},
            "spent": {"default": target + after_spent(default, b),
                      "random": search_spent(random, b) + after_spent(random, b)},
            "reach": None if reached is None else reached / search_spent(random, b),
            "trials": {"default": len(default.trials), "random": len(random.trials)},
            "confirmed": {k: ranked(st)[0].number in confirmations(st)
                          for k, st in (("default", default), ("random", random))}}


def verdict(results: list[dict[str, Any]], b: Budget) -> list[Row]:
    rows = []
    for backbone in dict.fromkeys(r["backbone"] for r in results):
        mine = [r for r in results if r["backbone"] == backbone]
        seeds = [r["seed"] for r in mine]
        for other, label in (("random", "random search"), ("reference", "the best reference")):
            gaps = [r["test"]["default"] - r["test"][other] for r in mine]
            rows.append(Row(f"{backbone}: default search - {label}, test at the row budget",
                            statistics.mean(gaps), ">= 0.003",
                            "seeds " + ", ".join(f"{s}: {r['test']['default']:.4f} vs "
                                                 f"{r['test'][other]:.4f}"
                                                 for s, r in zip(seeds, mine))))
        reach = [r["reach"] if r["reach"] is not None else float("inf") for r in mine]
        spent = "; ".join(f"{r['spent']['default']} vs {r['spent']['random']} image-epochs"
                          for r in mine)
        rows.append(Row(f"{backbone}: share of random search's training to reach its best "
                        "trial", statistics.mean(reach), "<= 0.5", spent))
    return rows


def budget_doc(b: Budget, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The budget as written: the search seeds are those of the rows kept, whichever run
    trained them."""
    return json.loads(json.dumps({**asdict(b), "seeds": sorted({r["seed"] for r in results})}))


def kept(path: Path, results: list[dict[str, Any]], b: Budget) -> list[dict[str, Any]]:
    """``results`` and the rows of other backbones and seeds already in ``path`` at the same
    budget but for its search seeds (another run, e.g. one with other ``--seeds``, may have
    written them), ordered by backbone and seed."""
    mine = {(r["backbone"], r["seed"]): r for r in results}
    doc = json.loads(path.read_text()) if path.exists() else {}
    theirs = {k: v for k, v in doc.get("budget", {}).items() if k != "seeds"}
    same = theirs == {k: v for k, v in budget_doc(b, results).items() if k != "seeds"}
    old = doc.get("results", []) if same else []
    rows = {(r["backbone"], r["seed"]): r for r in old} | mine
    return [rows[k] for k in sorted(rows)]


STORE = ("search-efficiency.db", "search-efficiency-runs.json")  # a run's studies, trainings


def promotion(text: str) -> tuple[int, int, int]:
    """``TOP,EPOCHS,IMAGES`` (all positive integers)."""
    try:
        top, epochs, images = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not TOP,EPOCHS,IMAGES") from None
    if min(top, epochs, images) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: TOP, EPOCHS and IMAGES must be >= 1")
    return top, epochs, images


def copy_studies(source: Path, cache: Path) -> None:
    """The studies and trainings of an earlier run (``source``/out) copied into ``cache``,
    each file only where ``cache`` has none (a resumed run keeps what it has), whole: to a
    partial name first, so that a run stopped mid-copy leaves no half file to resume from."""
    missing = [name for name in STORE if not (cache / name).exists()]
    if STORE[0] in missing and not (source / "out" / STORE[0]).is_file():
        raise FileNotFoundError(f"--studies-from {source}: no {source / 'out' / STORE[0]}")
    for name in missing:
        if (source / "out" / name).is_file():
            part = cache / f"{name}.part"
            shutil.copy2(source / "out" / name, part)
            os.replace(part, cache / name)


def main() -> int:
    ap = long_run_parser(__doc__, HERE)
    ap.add_argument("--backbones", default="vgg8b,resnet18")
    ap.add_argument("--seeds", default=None, help="search seeds (default 0,1,2)")
    ap.add_argument("--promote", type=promotion, default=None, metavar="TOP,EPOCHS,IMAGES",
                    help="the promotion (default 3,6,3000; the tiny run's 1,2,256)")
    ap.add_argument("--studies-from", type=Path, default=None, metavar="DIR",
                    help="start from copies of DIR/out's studies and trainings")
    args = ap.parse_args()
    if args.studies_from and args.studies_from.resolve() == args.out.resolve():
        ap.error("--studies-from must name another folder than --out")
    cache = long_run_start(args)
    if args.studies_from:
        try:
            copy_studies(args.studies_from, cache)
        except FileNotFoundError as e:
            ap.error(str(e))
    b = TINY if args.tiny else FULL
    if args.seeds:
        b = replace(b, seeds=tuple(int(x) for x in args.seeds.split(",")))
    if args.promote:
        b = replace(b, promote=args.promote)
    storage = f"sqlite:///{cache / 'search-efficiency.db'}"
    rows = Rows(b, cache)
    results, path = [], args.out / "search_efficiency.json"
    for backbone in args.backbones.split(","):
        for seed in b.seeds:
            results.append(one(b, storage, rows, backbone, seed))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "winners"}),
                  flush=True)
            every = kept(path, results, b)
            path.write_text(json.dumps({"budget": budget_doc(b, every), "results": every,
                                        "written": time.strftime("%Y-%m-%d %H:%M %Z")},
                                       indent=1))
    show(verdict(kept(path, results, b), b))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
