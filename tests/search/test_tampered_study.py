"""Hostile input, fourth round (item 5): study attributes tampered with, or written by other
code. Every stored value is read through a typed reader: one that is not what its key says is
refused in one line naming the study, the key and what was expected, exit 2, before anything
is written; the storage stays as it was. The dashboard refuses such a storage at start."""

from __future__ import annotations

import hashlib
import math
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import optuna
import pytest

from bwbpf.reports.record import ranked
from bwbpf.search.cli import main

from .conftest import FAST, Runner

STEP_SECONDS = "bwbpf:step_seconds|"  # search.trial.costs writes the measured step times there
BASE = ["--study", "s", "--n-trials", "2", "--pruner", "none", *FAST]
Tamper = Callable[[Path], None]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study made by `run` (settings, BP baseline, measured step times), once a module."""
    path = tmp_path_factory.mktemp("base") / "study.db"
    assert main(["-q", "run", "--storage", f"sqlite:///{path}", *BASE]) == 0
    return path


@pytest.fixture
def db(base: Path, tmp_path: Path) -> Path:
    path = tmp_path / "study.db"
    shutil.copy(base, path)
    return path


def user_attr(key: str, value: Any) -> Tamper:
    def tamper(db: Path) -> None:
        optuna.load_study(study_name="s", storage=f"sqlite:///{db}").set_user_attr(key, value)
    return tamper


def system_attr(key: str, value: Any) -> Tamper:
    def tamper(db: Path) -> None:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
        storage.set_study_system_attr(storage.get_study_id_from_name("s"), key, value)
        storage.engine.dispose()
    return tamper


def not_json(key: str, text: str) -> Tamper:
    """Written past Optuna, which stores JSON only: as a database client would."""
    def tamper(db: Path) -> None:
        with sqlite3.connect(db) as conn:
            assert conn.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = ?",
                                (text, key)).rowcount == 1
        conn.close()
    return tamper


def bp_entry(**fields: Any) -> Tamper:
    def tamper(db: Path) -> None:
        study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
        raw = study.user_attrs["bp_baseline"]
        study.set_user_attr("bp_baseline", {**raw, "vgg8b": {**raw["vgg8b"], **fields}})
    return tamper


def settings_entry(**fields: Any) -> Tamper:
    def tamper(db: Path) -> None:
        study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
        study.set_user_attr("settings", {**study.user_attrs["settings"], **fields})
    return tamper


# (tamper, what the line must say: the key, and what was expected)
SETTINGS = {
    "settings-not-json": (not_json("settings", "{nope"),
                          ["'settings' is '{nope'", "expected a JSON value"]),
    "settings-42": (user_attr("settings", 42),
                    ["'settings' is 42", "expected an object (the run's settings)"]),
    "settings-hello": (user_attr("settings", "hello"),
                       ["'settings' is 'hello'", "expected an object"]),
}
OTHERS = {
    "promoted-x": (user_attr("promoted:6x0:0", {"seeds": [0], "val_accuracy": ["x"]}),
                   ["'promoted:6x0:0' (val_accuracy[0]) is 'x'", "an accuracy in [0, 1]"]),
    "promoted-nan": (user_attr("promoted:6x0:0", {"seeds": [0, 1],
                                                  "val_accuracy": [math.nan, math.nan]}),
                     ["'promoted:6x0:0' (val_accuracy[0]) is nan", "an accuracy in [0, 1]"]),
    # would rank trial 1 first: refused, as any accuracy outside [0, 1]
    "promoted-1e308": (user_attr("promoted:6x0:1", {"seeds": [0], "val_accuracy": [1e308]}),
                       ["'promoted:6x0:1' (val_accuracy[0]) is 1e+308", "in [0, 1]"]),
    "confirmed-seed": (user_attr("confirmed:0", {"seeds": [0, "one"],
                                                 "val_accuracy": [0.1, 0.2]}),
                       ["'confirmed:0' (seeds[1]) is 'one'", "a whole number >= 0"]),
    "settings-cost-model": (settings_entry(cost_model="gpu"),
                            ["'settings' (cost_model) is 'gpu'",
                             "expected 'measured' or 'flops'"]),
    "bp-accuracy": (bp_entry(val_accuracy=1e308),
                    ["'bp_baseline' (vgg8b.val_accuracy) is 1e+308", "in [0, 1]"]),
    "bp-sweep-point": (bp_entry(sweep=[{"lr": "fast"}]),
                       ["'bp_baseline' (vgg8b.sweep[0].lr) is 'fast'", "a number > 0"]),
    "step-time": (system_attr(f"{STEP_SECONDS}tampered", "abc"),
                  [f"system attribute '{STEP_SECONDS}tampered' is 'abc'", "a step time"]),
}
COMMANDS = {"studies": ["studies"], "report": ["report", "--study", "s", "-o", "OUT.html"],
            "export": ["export", "--study", "s", "-o", "OUT.json"], "run": ["run", *BASE]}
CASES = ([(c, k) for c in SETTINGS for k in COMMANDS]
         + [(c, k) for c in OTHERS for k in ("studies", "report", "export")]
         + [("step-time", "run"), ("promoted-1e308", "run"), ("bp-sweep-point", "run")])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("case", "command"), CASES)
def test_a_tampered_value_is_refused_in_one_line_and_nothing_changes(
        cli: Runner, db: Path, tmp_path: Path, case: str, command: str) -> None:
    tamper, says = {**SETTINGS, **OTHERS}[case]
    tamper(db)
    before = digest(db)
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in COMMANDS[command]]
    rc, out, err = cli("-q", *argv, "--storage", f"sqlite:///{db}")
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("bwbpf-search: error: study 's': stored "), err
    for part in says:
        assert part in err, err
    assert out == "" and not list(tmp_path.glob("out*"))
    assert digest(db) == before


def test_an_accuracy_outside_0_1_never_ranks(db: Path) -> None:
    from bwbpf.reports.attr_readers import BadStoredValue

    user_attr("promoted:6x0:1", {"seeds": [0], "val_accuracy": [1e308]})(db)
    with pytest.raises(BadStoredValue, match="1e\\+308"):
        ranked(optuna.load_study(study_name="s", storage=f"sqlite:///{db}"))


@pytest.mark.parametrize("case", ["settings-not-json", "step-time"])
def test_the_dashboard_refuses_a_tampered_study_at_start(db: Path, case: str) -> None:
    """Before: the server started and answered HTTP 500 on every route (not JSON) or on the
    study's pages; now nothing is served."""
    {**SETTINGS, **OTHERS}[case][0](db)
    before = digest(db)
    with socket.socket() as s:  # a free port, given back for the server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "bwbpf.search", "dashboard", "--storage", f"sqlite:///{db}",
         "--host", "127.0.0.1", "--port", str(port)],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "study 's': stored" in proc.stderr, proc.stderr
    assert "optuna-dashboard for" not in proc.stdout
    assert digest(db) == before
