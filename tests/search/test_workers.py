"""Many workers on one study, workers that die, a storage that restarts: real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from bwbpf.search.study import budget
from bwbpf.spaces import from_document

from .conftest import FAST, heartbeats_lapsed, until

pytestmark = pytest.mark.integration
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def bwbpf(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bwbpf.search", *argv], capture_output=True,
                          text=True, env=ENV, timeout=600, **kw)


def spawn(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bwbpf.search", *argv], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def wait_for(predicate, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise AssertionError("timed out")
        time.sleep(0.2)


def test_three_workers_share_one_budget(postgres, tmp_path: Path) -> None:
    r = bwbpf("run", "--storage", postgres.url, "--study", "jobs", "--n-trials", "12",
              "--jobs", "3", *FAST)
    assert r.returncode == 0, r.stderr
    done = finished(postgres.url, "jobs")
    assert len(done) == 12 and len({t.number for t in done}) == 12
    study = optuna.load_study(study_name="jobs", storage=postgres.url)
    assert budget.used(study) == 12
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    for t in done:
        doc = json.loads(t.user_attrs["decoupling"])
        assert from_document(doc) is not None and doc["provenance"]["trial"] == t.number
        assert len(t.user_attrs["curve"]) >= 1
    # the password is never shown: not in output, files or reports
    out = r.stdout + r.stderr
    assert postgres.url.split(":")[2].split("@")[0] == "s3cret-pw" and "s3cret-pw" not in out
    assert "***" in json.loads(done[0].user_attrs["decoupling"])["provenance"]["storage"]
    exported, report = tmp_path / "e.json", tmp_path / "r.html"
    assert bwbpf("export", "--storage", postgres.url, "--study", "jobs", "-o",
                 str(exported)).returncode == 0
    assert bwbpf("report", "--storage", postgres.url, "--study", "jobs", "-o",
                 str(report)).returncode == 0
    assert "s3cret-pw" not in exported.read_text() + report.read_text()
    bad = bwbpf("studies", "--storage", postgres.url.replace("s3cret-pw", "wrong-pw"))
    assert bad.returncode == 2 and "wrong-pw" not in bad.stderr and "***" in bad.stderr


def test_a_killed_worker_is_retried_and_the_study_completes(postgres) -> None:
    argv = ["-q", "run", "--storage", postgres.url, "--study", "kill", "--n-trials", "6",
            "--heartbeat", "1", "--pruner", "none",
            *[a if a != "2" else "3" for a in FAST]]
    victim = spawn(*argv)

    def mid_trial() -> bool:
        try:
            trials = optuna.load_study(study_name="kill", storage=postgres.url).get_trials()
        except Exception:
            return False
        # mid-way through a trial that is not the last: the kill lands before the study ends
        return any(t.state == TrialState.RUNNING and t.user_attrs.get("curve") and t.number < 5
                   for t in trials)

    wait_for(mid_trial)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = [t for t in optuna.load_study(study_name="kill", storage=postgres.url).get_trials()
              if t.state == TrialState.RUNNING][0].number
    r = bwbpf(*argv)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="kill", storage=postgres.url)
    trials = study.get_trials()
    assert trials[killed].state == TrialState.FAIL  # stale: three heartbeats missed
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == trials[killed].params
    assert len(finished(postgres.url, "kill")) == 6 and budget.used(study) == 6


def test_storage_restart_loses_nothing_and_a_rerun_completes(postgres) -> None:
    argv = ["-q", "run", "--storage", postgres.url, "--study", "restart", "--n-trials", "10",
            "--heartbeat", "1", "--pruner", "none", *FAST]
    worker = spawn(*argv)
    wait_for(lambda: len(finished(postgres.url, "restart")) >= 3 if _exists(postgres.url)
             else False)
    before = {t.number: (t.state, t.params, t.user_attrs) for t in
              finished(postgres.url, "restart")}
    postgres.stop("fast")  # (pg_ctl waits until it is down)
    postgres.start()
    out, err = worker.communicate(timeout=300)
    # either it recovered and finished, or it stopped with one clear line
    assert worker.returncode == 0 or (worker.returncode == 1 and "failed:" in err
                                      and "rerun the same command" in err), err
    assert "Traceback" not in err
    after = {t.number: (t.state, t.params, t.user_attrs)
             for t in finished(postgres.url, "restart")}
    assert all(after[n] == v for n, v in before.items())  # nothing stored before is lost
    # a trial cut off by the restart goes stale after three heartbeats
    until(lambda: heartbeats_lapsed(postgres.url, grace=3.5), "the cut-off trial to go stale")
    r = bwbpf(*argv)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="restart", storage=postgres.url)
    assert budget.used(study) == 10 and len(finished(postgres.url, "restart")) >= 9
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]


def _exists(url: str) -> bool:
    try:
        optuna.load_study(study_name="restart", storage=url)
        return True
    except Exception:
        return False


def test_two_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["-q", "run", "--storage", db, "--study", "shared", "--n-trials", "6", *FAST]
    procs = [spawn(*argv) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "database is locked" not in err
    study = optuna.load_study(study_name="shared", storage=db)
    assert budget.used(study) == 6
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))
    with sqlite3.connect(tmp_path / "study.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
