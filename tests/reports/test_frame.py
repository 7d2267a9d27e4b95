from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from bwbpf.reports import trials_frame
from bwbpf.search.cli import main
from bwbpf.spaces import from_document

from .conftest import PLANS

COLUMNS = {"number", "state", "K", "cuts", "relative_cuts", "cut_1", "rel_cut_1",
           "aux_1_family", "aux_1_depth", "aux_1_width", "aux_1_loss", "lr_1", "lr_2",
           "weight_decay", "speedup", "peak_activation_mb", "block_1_val_accuracy",
           "epochs_run", "duration_s", "pruned_at", "baseline", "backbone", "width"}


@pytest.mark.parametrize("which", ["so", "mo"])
def test_frame_matches_every_trial(which: str, request: pytest.FixtureRequest) -> None:
    study: optuna.Study = request.getfixturevalue(which)
    frame = trials_frame(study)
    trials = study.get_trials()
    values = ["value_accuracy"] + (["value_speedup"] if which == "mo" else [])
    assert COLUMNS | set(values) <= set(frame.columns)
    assert len(frame) == len(trials) and list(frame["number"]) == [t.number for t in trials]
    for t, (_, row) in zip(trials, frame.iterrows()):
        assert row["state"] == t.state.name
        d = from_document(json.loads(t.user_attrs["decoupling"]))
        assert row["K"] == d.num_blocks and row["cuts"] == " ".join(map(str, d.cuts))
        assert row["cut_1"] == d.cuts[0]
        rel = d.relative_cuts()[0]
        assert row["rel_cut_1"] == pytest.approx(rel.stage + rel.fraction)
        assert row["aux_1_family"] == d.aux[0].family and row["aux_1_loss"] == d.aux[0].loss
        assert row["lr_1"] == pytest.approx(d.optim[0].lr)
        assert row["epochs_run"] == len(t.user_attrs["curve"])
        assert row["speedup"] == t.user_attrs["speedup"]
        if t.state == TrialState.COMPLETE:
            assert row["value_accuracy"] == pytest.approx(t.values[0])
            last = t.user_attrs["block_curve"][-1]
            assert row[f"block_{d.num_blocks}_val_accuracy"] == pytest.approx(last[-1])
            assert pd.isna(row["pruned_at"])
        else:
            assert row["state"] == "PRUNED" and row["pruned_at"] == 1  # median, epoch 1 of 2
            if which == "so":  # Optuna keeps a pruned trial's last reported value
                curve = t.user_attrs["curve"]  # rounded to 5 places when stored
                assert row["value_accuracy"] == pytest.approx(curve[-1], abs=1e-5)
            else:
                assert pd.isna(row["value_accuracy"])
    assert list(frame["baseline"][:2]) == ["paper", "uniform"]
    assert (frame["state"] == "PRUNED").any() and (frame["state"] == "COMPLETE").any()


def test_report_command_writes_csv_and_parquet(db: str, tmp_path: Path) -> None:
    html, csv, pq = tmp_path / "r.html", tmp_path / "r.csv", tmp_path / "r.parquet"
    assert main(["report", "--storage", db, "--study", "mo", "-o", str(html), "--csv", str(csv),
                 "--parquet", str(pq)]) == 0
    a, b = pd.read_csv(csv), pd.read_parquet(pq)
    assert len(a) == len(b) == len(PLANS) and list(a["number"]) == list(b["number"])
    assert html.stat().st_size > 1_000_000 and oct(html.stat().st_mode)[-3:] != "600"
    assert main(["report", "--storage", db, "--study", "mo", "-o", str(tmp_path)]) == 2
