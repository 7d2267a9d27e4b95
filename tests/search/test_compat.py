"""Studies made by earlier releases resume, report and export under this code: commit 01c7fce
(before typed space files, the typed BP baseline record and the Optuna adapter) and commit
6780e85 (before placement, tied heads, the published references, promotion and the declared
settings).

Each fixture was made by that commit's `bwbpf-search` with OLD_RUN (synthetic data: the
accuracies are near chance; what matters is what is stored)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from bwbpf.reports.record import TrialRecord
from bwbpf.reports.study_attrs import BP_BASELINE, bp_baselines, bp_confirmation

from .conftest import Runner

FIXTURES = [Path(__file__).parent / "data" / f"study-{commit}.db"
            for commit in ("01c7fce", "6780e85")]
OLD_RUN = ["run", "--study", "old", "--dataset", "synthetic", "--train-subset", "400",
           "--epochs", "2", "--batch-size", "64", "--device", "cpu", "--bp-lrs", "0.05",
           "--heartbeat", "5", "--n-trials", "4", "--confirm-top", "1", "--confirm-seeds", "1",
           "--min-speedup", "1.2", "--cost-model", "flops"]


@pytest.fixture(params=FIXTURES, ids=[f.stem for f in FIXTURES])
def old(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    db = tmp_path / "study.db"
    shutil.copy(request.param, db)
    return f"sqlite:///{db}"


def test_the_old_study_reads_as_it_was_stored(old: str) -> None:
    study = optuna.load_study(study_name="old", storage=old)
    raw = study.user_attrs[BP_BASELINE]["vgg8b"]
    bp = bp_baselines(study)["vgg8b"]
    assert bp.stored() == raw  # nothing lost or added by reading it
    assert bp.best_lr == raw["best_lr"] and len(bp.sweep) == len(raw["sweep"]) == 1
    c = bp_confirmation(study, "vgg8b")
    assert c is not None and c.accuracy == tuple(raw["confirmed"]["val_accuracy"])
    for t in study.get_trials():
        rec = TrialRecord.of(t)
        assert rec.decoupling() is not None or rec.rejected


def test_the_old_study_resumes_with_its_own_command(cli: Runner, old: str) -> None:
    before = {t.number: t.params for t in optuna.load_study(study_name="old",
                                                            storage=old).get_trials()}
    rc, out, err = cli("-q", *OLD_RUN[:OLD_RUN.index("--n-trials")], "--n-trials", "6",
                       *OLD_RUN[OLD_RUN.index("--n-trials") + 2:], "--storage", old)
    assert rc == 0, err
    assert "backprop (lr 0.05, the best of 1 in a sweep)" in out
    study = optuna.load_study(study_name="old", storage=old)
    after = {t.number: t.params for t in study.get_trials()}
    assert {n: after[n] for n in before} == before  # old trials keep their parameters
    assert len(after) > len(before)
    # the references such a study had, not the ones added since
    names = {TrialRecord.of(t).baseline for t in study.get_trials()} - {None}
    assert names <= {"paper", "uniform"}


def test_the_old_study_reports_and_exports(cli: Runner, old: str, tmp_path: Path) -> None:
    out = tmp_path / "best.json"
    rc, _, err = cli("export", "--storage", old, "--study", "old", "-o", str(out))
    assert rc == 0, err
    doc = json.loads(out.read_text())
    assert doc["metrics"]["bp_lr"] == 0.05
    rc, _, err = cli("report", "--storage", old, "--study", "old", "-o",
                     str(tmp_path / "r.html"))
    assert rc == 0, err
    rc, out_text, _ = cli("studies", "--storage", old)
    assert rc == 0 and out_text.startswith("old: ")
