"""What a study is set up with (samplers, their seeds) and how a start repairs it (trials of
dead workers, interrupted baselines). Real SQLite files; real processes where they matter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from bwbpf.search.study import budget
from bwbpf.search.study.samplers import Sampler, make_sampler
from bwbpf.spaces import SearchSpace, sample

from .conftest import FAST, Runner, heartbeats_lapsed, until

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ONE_EPOCH = [*FAST, "--epochs", "1", "--pruner", "none"]  # later flags win


def two_params(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", -1.0, 1.0) ** 2 + trial.suggest_int("y", 0, 8)


def objective(n_objectives: int) -> Any:
    def f(trial: optuna.Trial) -> float | tuple[float, float]:
        v = two_params(trial)
        return v if n_objectives == 1 else (v, trial.params["y"] - trial.params["x"])

    return f


@pytest.mark.parametrize("n_objectives", [1, 2])
@pytest.mark.parametrize("name", ["tpe", "nsga2", "gp"])
def test_model_based_samplers_model_all_parameters_jointly(name: Sampler, n_objectives: int
                                                           ) -> None:
    sampler = make_sampler(name, seed=0, n_trials=8)  # the first 4 trials at random
    study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=sampler)
    study.optimize(objective(n_objectives), n_trials=5)
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[-1]
    assert set(study.sampler.infer_relative_search_space(study, frozen)) == {"x", "y"}
    if name != "nsga2":  # NSGA-II leaves the parameters it mutates to independent sampling
        assert set(trial.relative_params) == {"x", "y"}  # drawn together, by the joint model


def test_workers_sharing_a_seed_draw_different_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    optuna.create_study(study_name="w", storage=url)
    workers = [optuna.load_study(study_name="w", storage=url,
                                 sampler=make_sampler("tpe", seed=0, n_trials=40))
               for _ in range(2)]
    for _ in range(3):
        for w in workers:
            t = w.ask()
            w.tell(t, two_params(t))
    drawn = [tuple(sorted(t.params.items())) for t in workers[0].get_trials()]
    assert len(drawn) == 6 and len(set(drawn)) == 6


def test_one_process_replays_its_study_from_the_seed(tmp_path: Path) -> None:
    def params(db: str, seed: int) -> list[dict[str, Any]]:
        study = optuna.create_study(storage=f"sqlite:///{tmp_path / db}",
                                    sampler=make_sampler("tpe", seed=seed, n_trials=8))
        study.optimize(two_params, n_trials=8)  # 4 random, then TPE
        return [t.params for t in study.get_trials()]

    assert params("a.db", 0) == params("b.db", 0) != params("c.db", 1)


def test_same_seed_same_trials_through_the_cli(cli: Runner, tmp_path: Path) -> None:
    drawn = []
    for db in ("a.db", "b.db"):
        rc, _, err = cli("-q", "run", "--storage", f"sqlite:///{tmp_path / db}", "--study", "r",
                         "--n-trials", "2", "--no-baselines", *ONE_EPOCH)
        assert rc == 0, err
        study = optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path / db}")
        drawn.append([t.params for t in study.get_trials()])
    assert len(drawn[0]) == 2 and drawn[0] == drawn[1]


def spawn(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bwbpf.search", *argv], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.integration
def test_two_workers_running_the_same_command_repeat_no_trial(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'two.db'}"
    argv = ["-q", "run", "--storage", db, "--study", "t", "--n-trials", "4", "--no-baselines",
            *ONE_EPOCH]
    procs = [spawn(*argv) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    trials = optuna.load_study(study_name="t", storage=db).get_trials()
    drawn = [tuple(sorted(t.params.items())) for t in trials if t.params]
    assert len(drawn) >= 4 and len(set(drawn)) == len(drawn)


def wait_for(predicate: Any, timeout: float = 300.0) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise AssertionError("timed out")
        time.sleep(0.2)


def assert_complete(db: str, name: str, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=db)
    trials = study.get_trials()
    assert budget.used(study) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return trials


@pytest.mark.integration
def test_a_rerun_finishes_the_last_trial_of_a_killed_worker(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    argv = ["-q", "run", "--storage", db, "--study", "k", "--n-trials", "2", "--no-baselines",
            *FAST, "--epochs", "3", "--pruner", "none", "--heartbeat", "2"]  # grace: 6 s
    victim = spawn(*argv)

    def in_last_trial() -> bool:
        try:
            trials = optuna.load_study(study_name="k", storage=db).get_trials()
        except Exception:
            return False
        return any(t.number == 1 and t.state == TrialState.RUNNING and t.user_attrs.get("curve")
                   for t in trials)

    wait_for(in_last_trial)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    until(lambda: heartbeats_lapsed(db, grace=7.0), "the killed trial's heartbeat to lapse")
    r = subprocess.run([sys.executable, "-m", "bwbpf.search", *argv], capture_output=True,
                       text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    trials = assert_complete(db, "k", 2)
    assert trials[1].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == trials[1].params


@pytest.mark.integration
def test_a_trial_left_without_a_heartbeat_is_run_again(cli: Runner, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    # A worker killed between creating its trial and the first heartbeat leaves this behind.
    optuna.create_study(study_name="h", storage=db, direction="maximize").ask()
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "h", "--n-trials", "2",
                     "--no-baselines", *ONE_EPOCH, "--heartbeat", "1")
    assert rc == 0, err
    trials = assert_complete(db, "h", 2)
    assert trials[0].state == TrialState.FAIL


@pytest.mark.integration
def test_an_interrupted_baseline_is_queued_again(cli: Runner, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    argv = ["-q", "run", "--storage", db, "--study", "b", *ONE_EPOCH]
    rc, _, err = cli(*argv, "--n-trials", "1")  # the paper's baseline; the uniform one waits
    assert rc == 0, err
    study = optuna.load_study(study_name="b", storage=db)
    trial = study.ask()  # the queued uniform baseline, as Ctrl-C leaves it mid-training
    assert trial.user_attrs["baseline"] == "uniform"
    sample(trial, SearchSpace())
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=TrialState.FAIL)
    rc, out, err = cli(*argv, "--n-trials", "2")
    assert rc == 0, err
    trials = assert_complete(db, "b", 2)
    done = {t.user_attrs.get("baseline") for t in trials if t.state == TrialState.COMPLETE}
    assert done == {"paper", "uniform"}
    assert "\nuniform  trial 2: val " in out
