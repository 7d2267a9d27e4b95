"""`bwbpf-search run` end to end on synthetic data, into a real SQLite file."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bwbpf.reports.study_attrs import BP_BASELINE
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.trial.objective import FAILURES, Objective
from bwbpf.trainers import Data, Split

from .conftest import FAST, Runner

ATTRS = {"decoupling", "curve", "block_curve", "block_flops", "speedup",
         "peak_activation_mb", "train_seconds", "device"}


def load(db: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=db)


def test_study_runs_prunes_resumes_and_keeps_studies_apart(cli: Runner, db: str) -> None:
    rc, out, err = cli("-q", "run", "--storage", db, "--study", "a", "--n-trials", "6",
                       "--pruner", "sha", "--reduction-factor", "100", *FAST)
    assert rc == 0, err
    study = load(db, "a")
    trials = study.get_trials()
    assert len(trials) == 6
    states = {t.state for t in trials}
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states  # forced pruning
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["paper", "uniform"]
    assert all("baseline" not in t.user_attrs for t in trials[2:])
    for t in trials:
        assert ATTRS <= set(t.user_attrs) or t.state != TrialState.COMPLETE
        assert len(t.user_attrs["curve"]) == (2 if t.state == TrialState.COMPLETE else 1)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert all(t.user_attrs["pruned_at"] == 1 and t.intermediate_values for t in pruned)
    bp = study.user_attrs[BP_BASELINE]["vgg8b"]
    assert bp["best_lr"] == 0.05 and 0 < bp["val_accuracy"] <= 1
    assert "best     trial" in out and "backprop (lr 0.05, the best of 1 in a sweep)" in out

    # rerunning the same command runs nothing: 6 is the study's total
    before = hashlib.sha256(Path(db[len("sqlite:///"):]).read_bytes()).hexdigest()
    rc, out, _ = cli("-q", "run", "--storage", db, "--study", "a", "--n-trials", "6",
                     "--pruner", "sha", "--reduction-factor", "100", *FAST)
    assert rc == 0 and len(load(db, "a").get_trials()) == 6
    # raising the total runs only the missing trials
    rc, _, _ = cli("-q", "run", "--storage", db, "--study", "a", "--n-trials", "8", "--pruner",
                   "sha", "--reduction-factor", "100", *FAST)
    assert rc == 0 and len(load(db, "a").get_trials()) == 8
    assert before != hashlib.sha256(Path(db[len("sqlite:///"):]).read_bytes()).hexdigest()

    # a second study in the same file is independent
    rc, _, _ = cli("-q", "run", "--storage", db, "--study", "b", "--n-trials", "3",
                   "--no-baselines", "--pruner", "none", *FAST)
    assert rc == 0
    b = load(db, "b").get_trials()
    assert len(b) == 3 and all(t.state == TrialState.COMPLETE for t in b)
    assert all("baseline" not in t.user_attrs for t in b)
    assert BP_BASELINE not in load(db, "b").user_attrs
    assert len(load(db, "a").get_trials()) == 8
    rc, out, _ = cli("studies", "--storage", db)
    assert rc == 0 and out.startswith("a: ") and "\nb: 3 complete;" in out


def test_multi_objective_pareto_front_and_curve_pruning(cli: Runner, db: str) -> None:
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "mo", "--n-trials", "6",
                     "--objectives", "accuracy,speedup", "--pruner", "sha",
                     "--reduction-factor", "100", *FAST)
    assert rc == 0, err
    study = load(db, "mo")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    assert study.best_trials  # the Pareto front
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert pruned and all(not t.intermediate_values for t in pruned)  # report() is refused...
    assert all(len(t.user_attrs["curve"]) == 1 for t in pruned)  # ...the curve is kept
    for t in study.best_trials:
        assert t.values[1] == pytest.approx(t.user_attrs["speedup"], rel=1e-3)


def test_non_finite_loss_fails_the_trial_and_the_study_goes_on(synthetic: Data, db: str) -> None:
    x = synthetic.train.x.clone()
    x[::7] = float("nan")
    bad = Data("nan", Split(x, synthetic.train.y), synthetic.val, synthetic.test, 10, False, 1)
    s = SearchSettings(study="nan", storage=db, epochs=1, batch_size=64, device="cpu",
                       n_trials=2, quiet=True)
    study = optuna.create_study(storage=db, study_name="nan", direction="maximize")
    study.optimize(Objective(s, bad), n_trials=2, catch=FAILURES)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("loss is not finite" in t.user_attrs["fail_reason"] for t in trials)


def _wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_sigint_mid_trial_leaves_a_loadable_study_and_rerun_completes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [sys.executable, "-m", "bwbpf.search", "-q", "run", "--storage", db, "--study", "s",
            "--n-trials", "4", "--pruner", "none", "--no-baselines", "--cost-model", "flops",
            *[a if a != "2" else "4" for a in FAST]]  # (what a trial costs is not the point)
    # a shell's background job (`make test &`, nohup) inherits SIGINT ignored; Python then
    # installs no KeyboardInterrupt handler, so the child gets the default disposition back
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def mid_trial() -> bool:
        try:
            trials = load(db, "s").get_trials()
        except Exception:
            return False
        # past the first epoch of a trial that is not the last, so the run has seconds of work
        # left when the signal lands (not a study about to end, where it would exit 0)
        running = [t for t in trials if t.state == TrialState.RUNNING and t.number < 3]
        return bool(running) and len(running[0].user_attrs.get("curve", [])) >= 1

    _wait_for(mid_trial)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    study = load(db, "s")
    interrupted = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["interrupted"] is True
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done = [t for t in load(db, "s").get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 4
