"""Studies as pandas frames: one row per trial, flat columns."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd

from bwbpf.reports.pareto import front
from bwbpf.reports.record import TrialRecord
from bwbpf.reports.seed_record import Confirmation
from bwbpf.reports.stored_run import objective_names
from bwbpf.reports.study_attrs import confirmations


def trial_row(t: optuna.trial.FrozenTrial, names: list[str],
              confirmed: Confirmation | None = None) -> dict[str, Any]:
    rec = TrialRecord.of(t)
    row: dict[str, Any] = {"number": t.number, "state": t.state.name}
    for i, name in enumerate(names):
        row[f"value_{name}"] = t.values[i] if t.values else None
    if confirmed is not None:  # value_accuracy stays the single seed
        row.update(confirmed_mean=confirmed.mean, confirmed_std=confirmed.std,
                   confirmed_seeds=len(confirmed.seeds))
    duration = t.duration.total_seconds() if t.duration is not None else None
    row.update(baseline=rec.baseline, warm_start=rec.warm_start, epochs_run=len(rec.curve),
               duration_s=duration,
               pruned_at=rec.pruned_at, fail_reason=rec.fail_reason,
               rejected=rec.rejected, infeasible=rec.infeasible,
               speedup=rec.speedup, speedup_flops=rec.speedup_flops,
               compute_overhead=rec.compute_overhead,
               memory_ratio=rec.memory_ratio, peak_activation_mb=rec.peak_activation_mb,
               final_val_accuracy=rec.curve[-1] if rec.curve else None)
    d = rec.decoupling()
    if d is None:
        return row
    row.update(backbone=d.backbone, width=d.width, K=d.num_blocks,
               cuts=" ".join(map(str, d.cuts)),
               relative_cuts=" ".join(f"{r.stage + r.fraction:.3f}" for r in d.relative_cuts()))
    for i, (cut, rel) in enumerate(zip(d.cuts, d.relative_cuts()), start=1):
        row[f"cut_{i}"] = cut
        row[f"rel_cut_{i}"] = rel.stage + rel.fraction  # stage + fraction within it
    for k, a in enumerate(d.aux, start=1):
        row.update({f"aux_{k}_family": a.family, f"aux_{k}_depth": a.depth,
                    f"aux_{k}_width": a.width, f"aux_{k}_loss": a.loss})
    for k, o in enumerate(d.optim, start=1):
        row[f"lr_{k}"] = o.lr
    row["weight_decay"] = d.optim[0].weight_decay
    for k, acc in enumerate(rec.block_curve[-1] if rec.block_curve else [], start=1):
        row[f"block_{k}_val_accuracy"] = acc
    return row


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, values (single seed), the mean, sample std and number
    of seeds of a confirmed trial, K, cuts (unit and relative), per-block aux
    family/depth/width/loss and learning rate, speed-up, memory, per-block final accuracy,
    epochs run, duration, pruned-at epoch, and why a trial breaks the study's constraints
    (``rejected``: never trained; ``infeasible``: a baseline trained anyway), and whether it
    is on the study's Pareto front (``reports.pareto``). Columns a trial lacks are missing
    values."""
    names = objective_names(study)
    conf = confirmations(study)
    on = {t.number for t in front(study)}
    rows = [{**trial_row(t, names, conf.get(t.number)), "on_front": t.number in on}
            for t in study.get_trials(deepcopy=False)]
    frame = pd.DataFrame(rows)
    if "K" in frame:
        frame["K"] = frame["K"].astype("Int64")
    ints = [c for c in frame.columns if c.startswith("cut_") or c.endswith("_depth")]
    for c in ints + ["pruned_at", "confirmed_seeds"]:
        if c in frame:
            frame[c] = frame[c].astype("Int64")
    return frame
