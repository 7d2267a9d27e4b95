"""The data of every report figure, computed from a study into plain NamedTuples.

Optuna's pattern: one function computes a plot's data (tested directly), another draws it
(``reports.draw``).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import optuna
import pandas as pd
from optuna.trial import TrialState

from bwbpf.reports import pareto
from bwbpf.reports.record import TrialRecord, best_trial
from bwbpf.spaces import get_backbone
from bwbpf.spaces.heads import AUX_HEADS
from bwbpf.spaces.input_shape import ASSUMED, InputShape


class History(NamedTuple):
    numbers: list[int]  # complete trials, in order
    values: list[float]  # their accuracy
    best: list[float]  # best accuracy so far among feasible trials (NaN before the first)
    baselines: list[str]  # "paper", "uniform" ("paper, infeasible": breaks a constraint) or ""


class Curves(NamedTuple):
    numbers: list[int]
    states: list[str]  # COMPLETE, PRUNED, FAIL, RUNNING
    curves: list[list[float]]  # validation accuracy per epoch (pruned trials included)


class Importance(NamedTuple):
    params: list[str]
    importances: list[float]


class SplitStats(NamedTuple):
    backbone: str
    boundaries: list[int]  # unit index a block may start at: 1..n-1
    top_frequency: list[float]  # share of the top trials that cut there
    mean_accuracy: list[float | None]  # mean accuracy of complete trials that cut there
    n_top: int


class BlockAccuracy(NamedTuple):
    number: int
    final: list[float]  # every block's head, last epoch
    curves: list[list[float]]  # [block][epoch]


class Front(NamedTuple):
    numbers: list[int]
    accuracy: list[float]
    speedup: list[float]
    on_front: list[bool]  # on the study's Pareto front (reports.pareto)


class Unit(NamedTuple):
    unit: int  # index in the backbone
    stage: int
    channels: int
    size: tuple[int, int]
    block: int


class Diagram(NamedTuple):
    title: str
    units: list[Unit]
    heads: list[str]  # label of block k's aux head; the last block: "classifier (global loss)"


def accuracy_column(frame: pd.DataFrame) -> str:
    return next(c for c in frame.columns if c.startswith("value_"))


def history(frame: pd.DataFrame) -> History:
    done = frame[frame["state"] == "COMPLETE"].sort_values("number")
    col = accuracy_column(frame)
    values = [float(v) for v in done[col]]
    ok = [not isinstance(r, str) for r in done.get("infeasible", [None] * len(done))]
    best, top = [], math.nan
    for v, feasible in zip(values, ok):
        if feasible and (math.isnan(top) or v > top):
            top = v
        best.append(top)
    names = [b if isinstance(b, str) else "" for b in done.get("baseline", [None] * len(done))]
    tags = [", ".join(filter(None, [b, "" if f else "infeasible"])) for b, f in zip(names, ok)]
    return History([int(n) for n in done["number"]], values, best, tags)


def curves(study: optuna.Study) -> Curves:
    rows = [(t.number, t.state.name, list(c)) for t in study.get_trials(deepcopy=False)
            if (c := TrialRecord.of(t).curve)]
    return Curves([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def importances(study: optuna.Study) -> Importance:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 3 or len({t.values[0] for t in done}) < 2:
        return Importance([], [])
    # PED-ANOVA (Optuna's default, no scikit-learn) rates what it takes to reach *low* target
    # values, hence the negated accuracy; it warns about exactly that whenever a target is set.
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            imp = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=lambda t: -t.values[0], normalize=True)
    except (RuntimeError, ValueError):  # too few distinct parameter values
        return Importance([], [])
    return Importance(list(imp), [float(v) for v in imp.values()])


def split_stats(frame: pd.DataFrame, top_fraction: float = 0.25) -> SplitStats:
    done = frame[(frame["state"] == "COMPLETE") & frame.get("cuts", pd.Series()).notna()]
    if done.empty:
        return SplitStats("", [], [], [], 0)
    col = accuracy_column(frame)
    backbone = str(done.sort_values(col, ascending=False)["backbone"].iloc[0])
    done = done[done["backbone"] == backbone]
    n = get_backbone(backbone).num_units
    n_top = max(1, math.ceil(len(done) * top_fraction))
    top = done.sort_values(col, ascending=False).head(n_top)
    cut_sets = [{int(c) for c in s.split()} for s in done["cuts"]]
    top_sets = [{int(c) for c in s.split()} for s in top["cuts"]]
    bounds = list(range(1, n))
    freq = [sum(b in s for s in top_sets) / n_top for b in bounds]
    accs: list[float | None] = []
    for b in bounds:
        vals = [float(v) for v, s in zip(done[col], cut_sets) if b in s]
        accs.append(sum(vals) / len(vals) if vals else None)
    return SplitStats(backbone, bounds, freq, accs, n_top)


def block_accuracy(study: optuna.Study) -> BlockAccuracy | None:
    best = best_trial(study)
    per_epoch = TrialRecord.of(best).block_curve if best is not None else ()
    if best is None or not per_epoch:
        return None
    per_block = [list(col) for col in zip(*per_epoch)]
    return BlockAccuracy(best.number, list(per_epoch[-1]), per_block)


def front_figure(study: optuna.Study) -> Front | None:
    """The feasible trials on the accuracy / speed-up plane, marked by the one Pareto rule
    (``reports.pareto``: also ``export --pareto`` and the CSV's ``on_front``); None when a
    trial has no recorded speed-up."""
    p = pareto.points(study)
    if p.speedup is None:
        return None
    return Front([t.number for t in p.trials], p.accuracy, p.speedup, p.on_front)


def diagram(study: optuna.Study) -> Diagram | None:
    best = best_trial(study)
    rec = TrialRecord.of(best) if best is not None else TrialRecord()
    d = rec.decoupling()
    if best is None or d is None:
        return None
    shape = InputShape.of(rec.document or {}) or ASSUMED
    infos = get_backbone(d.backbone).describe(width=d.width, in_channels=shape.channels,
                                              image_size=shape.size)
    ranges = d.block_ranges()
    units = [Unit(u.index, u.stage, u.channels, u.size,
                  next(k for k, (a, b) in enumerate(ranges) if a <= u.index < b)) for u in infos]
    heads = [a.family + (f" d{a.depth} w{a.width:g}" if AUX_HEADS.get(a.family).has_knobs
                         else "") + f" ({a.loss})" for a in d.aux] + ["classifier (global loss)"]
    title = f"trial {best.number}: {d.backbone} x{d.width:g}, K={d.num_blocks}"
    return Diagram(title, units, heads)
