"""Studies as pandas frames: one row per trial, flat columns."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd

from bwbpf.spaces import ConfigError, Decoupling, from_document
from bwbpf.spaces.document import as_document

DOCUMENT = "decoupling"


def objective_names(study: optuna.Study) -> list[str]:
    """The names of the study's objectives (accuracy, speedup, memory), from its settings."""
    names = study.user_attrs.get("settings", {}).get("objectives")
    n = len(study.directions)
    return list(names) if names and len(names) == n else [f"objective_{i}" for i in range(n)]


def decoupling_of(trial: optuna.trial.FrozenTrial) -> Decoupling | None:
    doc = as_document(trial.user_attrs.get(DOCUMENT))
    if doc is None:
        return None
    try:
        return from_document(doc)
    except ConfigError:
        return None


def trial_row(t: optuna.trial.FrozenTrial, names: list[str]) -> dict[str, Any]:
    attrs = t.user_attrs
    row: dict[str, Any] = {"number": t.number, "state": t.state.name}
    for i, name in enumerate(names):
        row[f"value_{name}"] = t.values[i] if t.values else None
    curve = attrs.get("curve", [])
    blocks = attrs.get("block_curve", [])
    duration = t.duration.total_seconds() if t.duration is not None else None
    row.update(baseline=attrs.get("baseline"), epochs_run=len(curve), duration_s=duration,
               pruned_at=attrs.get("pruned_at"), fail_reason=attrs.get("fail_reason"),
               ideal_speedup=attrs.get("ideal_speedup"),
               peak_activation_mb=attrs.get("peak_activation_mb"),
               final_val_accuracy=curve[-1] if curve else None)
    d = decoupling_of(t)
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
    for k, acc in enumerate(blocks[-1] if blocks else [], start=1):
        row[f"block_{k}_val_accuracy"] = acc
    return row


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, values, K, cuts (unit and relative), per-block aux
    family/depth/width/loss and learning rate, speed-up, memory, per-block final accuracy,
    epochs run, duration, pruned-at epoch. Columns a trial lacks are missing values."""
    names = objective_names(study)
    rows = [trial_row(t, names) for t in study.get_trials(deepcopy=False)]
    frame = pd.DataFrame(rows)
    if "K" in frame:
        frame["K"] = frame["K"].astype("Int64")
    ints = [c for c in frame.columns if c.startswith("cut_") or c.endswith("_depth")]
    for c in ints + ["pruned_at"]:
        if c in frame:
            frame[c] = frame[c].astype("Int64")
    return frame
