"""Do short trials rank decouplings as longer training does? (Zela et al. 2018, EcoNAS 2020
and the zero-cost-proxy study warn they may not.) Fashion-MNIST on this CPU machine; hours:
run it in the background.

    .venv/bin/python benchmarks/fidelity.py                      # vgg8b and resnet18, 16 each
    .venv/bin/python benchmarks/fidelity.py --backbones vgg8b    # one backbone
    .venv/bin/python benchmarks/fidelity.py --tiny               # synthetic data, a minute

N decouplings are drawn from the default space (random parameters, seed i for the i-th),
feasible at >= 2x over BP and <= 0.6 of its memory by construction (search.trial.placement, FLOPs
cost model: the same figures whatever else the machine runs), distinct. A draw whose training
diverges (a non-finite loss: a failed trial in a search) has no accuracy to rank; it is kept in
the runs file as such, listed in the output, and the next draw takes its place. Each is
trained at every fidelity, over the seeds:

- the search's trial budget, 3 epochs on 3,000 images, validation accuracy (what a trial
  reports), and its neighbours: 1 and 6 epochs on 3,000; 3 epochs on 1,000 and on 10,000;
- the Quality rows' budget, 10 epochs on 10,000 images, test accuracy: the reference.

Kendall's tau and Spearman's rho between each fidelity's ranking (mean over seeds) and the
reference's are printed. Every finished training is kept in OUT/out/fidelity-runs.json, so a
run that stops continues where it stopped. The trial budget and the reference run first,
seed by seed, then the neighbouring fidelities; the table is printed as they finish, over what
is done, with each fidelity's agreement with itself across seeds (the ceiling noise sets).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from common import Runs, long_run_parser, long_run_start

from bwbpf.search.trial.constraints import of_space
from bwbpf.search.trial.placement import Placer
from bwbpf.spaces import Decoupling, SearchSpace, build, from_document, to_document
from bwbpf.spaces.encoding import draw
from bwbpf.spaces.random_trial import RandomTrial
from bwbpf.trainers import NonFiniteLoss, TrainPlan, evaluate, fit, load_data

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Fidelity:
    name: str
    epochs: int
    images: int
    split: str  # "val" (what a trial reports) or "test"


@dataclass(frozen=True)
class Budget:
    dataset: str
    width: float
    n: int  # decouplings per backbone
    seeds: tuple[int, ...]
    fidelities: tuple[Fidelity, ...]  # the first is the search's trial budget
    reference: Fidelity
    val_size: int = 1000
    batch: int = 128
    image_size: int | None = None


FULL = Budget("fashion-mnist", 0.25, 16, (0, 1),
              (Fidelity("trial: 3 ep x 3000", 3, 3000, "val"),
               Fidelity("1 ep x 3000", 1, 3000, "val"), Fidelity("6 ep x 3000", 6, 3000, "val"),
               Fidelity("3 ep x 1000", 3, 1000, "val"),
               Fidelity("3 ep x 10000", 3, 10000, "val")),
              Fidelity("row: 10 ep x 10000, test", 10, 10000, "test"))
TINY = replace(FULL, dataset="synthetic", width=0.125, n=4, seeds=(0,), val_size=64, batch=32,
               fidelities=(Fidelity("trial", 1, 128, "val"), Fidelity("more data", 1, 256, "val")),
               reference=Fidelity("row", 2, 256, "test"))
SPACE = SearchSpace(min_speedup=2.0, max_memory=0.6)


def kendall(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (ties in either ranking counted as such)."""
    conc = disc = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            x, y = a[i] - a[j], b[i] - b[j]
            if x == 0 and y == 0:
                continue
            if x == 0:
                ties_a += 1
            elif y == 0:
                ties_b += 1
            elif (x > 0) == (y > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + ties_a) * (conc + disc + ties_b)) ** 0.5
    return (conc - disc) / denom if denom else float("nan")


def ranks(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    out = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for t in range(i, j + 1):
            out[order[t]] = (i + j) / 2
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else float("nan")


def data_shape(b: Budget) -> dict[str, Any]:
    """The dataset's input channels, image size and classes, which the placement needs."""
    probe = load_data(b.dataset, train_subset=b.batch * 2, val_size=b.val_size, seed=0,
                      download=False, image_size=b.image_size)
    return {"in_channels": probe.in_channels, "image_size": probe.image_size,
            "num_classes": probe.num_classes}


def draws(backbone: str, b: Budget, shape: dict[str, Any]) -> Iterator[Decoupling]:
    """Distinct feasible decouplings drawn from the default space, in a fixed order (the
    i-th draw from seed i, kept when it is feasible as drawn and new)."""
    space = replace(SPACE, backbones=(backbone,), width=b.width)
    placer = Placer(space, of_space(space), **shape)
    seen: list[Decoupling] = []
    seed = 0
    while True:
        trial = RandomTrial(seed)
        d, lighter = placer.place(draw(trial, space))
        r = placer.pieces(backbone).of(d)
        # heads as drawn (not lightened), and a new structure: cuts and heads, not only lrs
        new = all((d.cuts, d.aux) != (o.cuts, o.aux) for o in seen)
        if not lighter and r.speedup >= 2.0 and r.memory_ratio <= 0.6 and new:
            seen.append(d)
            yield d
        seed += 1


def decouplings(backbone: str, b: Budget, shape: dict[str, Any], runs: Runs
                ) -> tuple[list[Decoupling], list[Decoupling]]:
    """The first ``b.n`` draws whose training has not diverged at any fidelity so far, and the
    diverged ones passed over on the way. A diverging decoupling (a non-finite loss, as a
    search trial fails) has no accuracy to rank; the next draw takes its place."""
    bad = diverged(runs)
    out: list[Decoupling] = []
    skipped: list[Decoupling] = []
    for d in draws(backbone, b, shape):
        if len(out) == b.n:
            break
        (skipped if json.dumps(d.to_dict(), sort_keys=True) in bad else out).append(d)
    return out, skipped


class Diverged(Exception):
    """A training in the set stopped on a non-finite loss (stored as such): draw the set
    again."""


def diverged(runs: Runs) -> set[str]:
    """The decouplings (their fields as JSON) with a training stored as diverged."""
    return {json.dumps(json.loads(k)[0], sort_keys=True) for k, v in runs.data.items()
            if isinstance(v, dict) and "diverged" in v}


def run_key(b: Budget, d: Decoupling, f: Fidelity, seed: int) -> str:
    return json.dumps([d.to_dict(), f.epochs, f.images, f.split, seed, b.dataset, b.val_size,
                       b.batch], sort_keys=True)


def migrate(runs: Runs) -> None:
    """Keys written when they held the decoupling's versioned document (whose schema id moves
    with each version) read as the decoupling's own fields, in memory; the file follows at
    the next write."""
    for key in list(runs.data):
        first, *rest = json.loads(key)
        if isinstance(first, dict) and "schema" in first:
            new = json.dumps([from_document(first).to_dict(), *rest], sort_keys=True)
            runs.data.setdefault(new, runs.data.pop(key))


def train(runs: Runs, b: Budget, d: Decoupling, f: Fidelity, seed: int) -> float:
    key = run_key(b, d, f, seed)

    def run() -> dict[str, Any]:
        data = load_data(b.dataset, train_subset=f.images, val_size=b.val_size, seed=0,
                         download=False, image_size=b.image_size)
        net = build(d, data.num_classes, data.in_channels, data.image_size, seed=seed)
        plan = TrainPlan(epochs=f.epochs, batch_size=b.batch, seed=seed, device="cpu",
                         augment=SPACE.augment, lr_schedule=SPACE.lr_schedule)
        start = time.perf_counter()
        try:
            r = fit(net, data, plan)
        except NonFiniteLoss as e:
            return {"diverged": str(e).splitlines()[0]}
        test = evaluate(net, data.test, plan)
        return {"val": r.val_accuracy, "test": test[-1], "blocks": test,
                "seconds": time.perf_counter() - start}

    done = runs.get(key, run)
    if "diverged" in done:
        raise Diverged(done["diverged"])
    return float(done[f.split])


def score(runs: Runs, b: Budget, d: Decoupling, f: Fidelity, seed: int) -> float | None:
    key = run_key(b, d, f, seed)
    return runs.data[key][f.split] if key in runs.data else None


PICK_OF = 8  # about the complete trials of a search's own (the proof's studies: 8-12)


def picked(score: list[float], row: list[float], k: int) -> float:
    """What a search gets at the row budget when it keeps the decoupling ``score`` ranks
    first among k of these, drawn at random: the expectation over every k-subset, exactly.
    Item i is a subset's pick when the subset holds i and k - 1 of the items ``score`` ranks
    below it (ties go to the earlier item), which C(below_i, k - 1) of the C(n, k) subsets
    do."""
    n = len(score)
    below = [sum(1 for j in range(n) if score[j] < score[i] or (score[j] == score[i] and j > i))
             for i in range(n)]
    return sum(math.comb(below[i], k - 1) * row[i] for i in range(n)) / math.comb(n, k)


PROMOTE_TOP = 3  # the trials a study promotes (search_efficiency's, README's advice)


def promoted_pick(trial: list[float], promoted: list[float], row: list[float], k: int,
                  top: int = PROMOTE_TOP) -> float:
    """What a study gets at the row budget when it has drawn k of these, promotes the ``top``
    best by the trial budget (``trial``) and keeps the best of those by the promoted fidelity
    (``promoted``): the mean over every k-subset, enumerated (ties go to the earlier item)."""
    total = 0.0
    for sub in itertools.combinations(range(len(row)), k):
        kept = sorted(sub, key=lambda i: (-trial[i], i))[:top]
        total += row[min(kept, key=lambda i: (-promoted[i], i))]
    return total / math.comb(len(row), k)


def table(backbone: str, b: Budget, ds: list[Decoupling], runs: Runs) -> dict[str, Any]:
    """tau and rho of each fidelity against the reference (each the mean over the seeds done
    at both), and each fidelity's agreement with itself across seeds: the ceiling that noise
    puts on any ranking."""
    out: dict[str, Any] = {"backbone": backbone, "reference": b.reference.name, "rows": []}
    for f in b.fidelities:
        pairs = []
        for d in ds:
            both = [(m, r) for s in b.seeds if (m := score(runs, b, d, f, s)) is not None
                    and (r := score(runs, b, d, b.reference, s)) is not None]
            if both:
                pairs.append((statistics.mean(p[0] for p in both),
                              statistics.mean(p[1] for p in both), len(both),
                              score(runs, b, d, b.fidelities[0], b.seeds[0])))
        if len(pairs) < 3:
            continue
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        k = min(PICK_OF, len(pairs))
        row = {"fidelity": f.name, "n": len(pairs), "tau": kendall(xs, ys),
               "rho": spearman(xs, ys), "seeds": min(p[2] for p in pairs),
               "pick": picked(xs, ys, len(xs)), "k": k, "pick_of_k": picked(xs, ys, k),
               "best_of_k": picked(ys, ys, k), "mean": statistics.mean(ys)}
        trial = [p[3] for p in pairs if p[3] is not None]
        if f is not b.fidelities[0] and len(trial) == len(pairs):
            # as a study uses it: the trial budget's first seed picks the top, this one the pick
            row["promoted_of_k"] = promoted_pick(trial, xs, ys, k)
        out["rows"].append(row)
    for f in (b.fidelities[0], b.reference):
        a, c = b.seeds[0], b.seeds[-1]
        same = [(x, y) for d in ds if (x := score(runs, b, d, f, a)) is not None
                and (y := score(runs, b, d, f, c)) is not None]
        if a != c and len(same) >= 3:
            xs, ys = [p[0] for p in same], [p[1] for p in same]
            out["rows"].append({"fidelity": f"{f.name}: seed {a} vs {c}", "n": len(same),
                                "tau": kendall(xs, ys), "rho": spearman(xs, ys), "seeds": 1})
    return out


def show(t: dict[str, Any]) -> None:
    print(f"{t['backbone']}: ranking against {t['reference']}", flush=True)
    for r in t["rows"]:
        print(f"  {r['fidelity']:36s} n={r['n']:2d} seeds={r['seeds']}  Kendall tau "
              f"{r['tau']:+.3f}  Spearman rho {r['rho']:+.3f}", flush=True)
        if "pick" in r:
            print(f"  {'':36s} its first at the row budget {r['pick']:.4f}; its first of "
                  f"{r['k']} drawn {r['pick_of_k']:.4f} (the best of them {r['best_of_k']:.4f}, "
                  f"any one {r['mean']:.4f})", flush=True)
        if "promoted_of_k" in r:
            print(f"  {'':36s} as a study's promotion (the top {PROMOTE_TOP} of {r['k']} drawn by "
                  f"the trial budget, then its first): {r['promoted_of_k']:.4f}", flush=True)


def measure(backbone: str, b: Budget, ds: list[Decoupling], skipped: list[Decoupling],
            runs: Runs) -> None:
    """Trains what is missing of ``ds`` at every fidelity, printing the table as it goes."""
    print(f"{backbone}: {len(ds)} decouplings ({len(skipped)} diverged draws passed over)",
          flush=True)
    for i, d in enumerate(ds):
        print(f"  {i:2d} K={d.num_blocks} cuts {d.cuts} heads "
              f"{[f'{a.family}/{a.loss}' for a in d.aux]}", flush=True)
    # the trial budget and the reference over every seed first (the question), then the
    # neighbouring fidelities (where a better trial budget might lie)
    for seed in b.seeds:
        for d in ds:
            train(runs, b, d, b.fidelities[0], seed)
        for d in ds:
            train(runs, b, d, b.reference, seed)
            show(table(backbone, b, ds, runs))
    for seed in b.seeds:
        for f in b.fidelities[1:]:
            for d in ds:
                train(runs, b, d, f, seed)
            show(table(backbone, b, ds, runs))


def main() -> None:
    ap = long_run_parser(__doc__, HERE)
    ap.add_argument("--backbones", default="vgg8b,resnet18")
    args = ap.parse_args()
    cache = long_run_start(args)
    b = TINY if args.tiny else FULL
    if args.tiny:
        b = replace(b, image_size=16)
    runs = Runs(cache / "fidelity-runs.json")
    migrate(runs)
    shape = data_shape(b)
    results = {}
    for backbone in args.backbones.split(","):
        while True:
            ds, skipped = decouplings(backbone, b, shape, runs)
            try:
                measure(backbone, b, ds, skipped, runs)
                break
            except Diverged as e:  # stored: the next pass draws the set without it
                print(f"  diverged: {e}; the next draw takes its place", flush=True)
        results[backbone] = table(backbone, b, ds, runs)
        results[backbone]["decouplings"] = [to_document(d) for d in ds]
        results[backbone]["diverged"] = [to_document(d) for d in skipped]
        results[backbone]["budget"] = asdict(b)
        show(results[backbone])
    # a run over some backbones keeps the others' tables written at the same budget
    path = args.out / "fidelity.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    budget = json.loads(json.dumps(asdict(b)))
    kept = {k: v for k, v in old.items() if k not in results and v.get("budget") == budget}
    path.write_text(json.dumps({**kept, **results}, indent=1))
    assert all(from_document(doc) for r in results.values() for doc in r["decouplings"])


if __name__ == "__main__":
    main()
