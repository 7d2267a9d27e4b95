"""A network of the user's own, end to end through the command line, and the bad names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import optuna_dashboard
import pytest

from bwbpf.reports import optuna_api
from bwbpf.reports.study_attrs import confirmations, promoted

from .conftest import FAST, Runner

USER_NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.a = nn.Conv2d(width, width, 3, padding=1)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU())
        self.b = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(2 * width, classes))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = self.down(x)
        x = torch.relu(x + self.b(x))
        return self.head(x)


def small(width=8):
    return Net(width)


def not_a_module():
    return "a string"


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.mean() > 0:
            x = -x
        return self.c(x)


def branchy():
    return Branchy()
'''


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder holds the user's module ``usernets`` (imported from there)."""
    (tmp_path / "usernets.py").write_text(USER_NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "usernets", raising=False)
    return tmp_path


def test_a_users_network_runs_exports_and_trains(cli: Runner, db: str, user_folder: Path
                                                  ) -> None:
    net = "py:usernets:small?width=6"
    rc, out, err = cli("run", "--backbone", net, "--storage", db, "--study", "mine",
                       "--n-trials", "2", "--min-speedup", "1.2", *FAST)
    assert rc == 0, err
    assert "study mine: 2 complete" in out
    assert "the downstream head copies units at another width" in err  # said, not proposed
    rc, out, err = cli("export", "--storage", db, "--study", "mine", "-o", "best.json")
    assert rc == 0, err
    doc = json.loads((user_folder / "best.json").read_text())
    assert doc["backbone"]["name"] == net and doc["backbone"]["family"] == "py:usernets:small"
    assert doc["backbone"]["adapted"] == {}  # 3 channels and 10 classes, as built
    assert len(doc["backbone"]["nodes"]) == len(doc["cuts"]["units"])
    rc, out, err = cli("train", "--arch", "best.json", "--dataset", "synthetic", "--epochs", "1",
                       "--train-subset", "200", "--device", "cpu", "--out", "run")
    assert rc == 0, err
    metrics = json.loads((user_folder / "run" / "metrics.json").read_text())
    assert 0 <= metrics["blockwise"]["test_accuracy"] <= 1
    for schedule in (["--schedule", "pipelined", "--devices", "cpu,cpu"],
                     ["--schedule", "distributed", "--nproc", "2"]):
        rc, out, err = cli("train", "--arch", "best.json", "--dataset", "synthetic",
                           "--epochs", "1", "--train-subset", "200", "--device", "cpu",
                           "--out", f"run-{schedule[1]}", *schedule)
        assert rc == 0, err
        done = json.loads((user_folder / f"run-{schedule[1]}" / "metrics.json").read_text())
        assert done["settings"]["schedule"] == schedule[1]
    # The same document after the network lost the node a cut follows
    doc["backbone"]["nodes"][0] = "gone"
    (user_folder / "lost.json").write_text(json.dumps(doc))
    rc, out, err = cli("train", "--arch", "lost.json", "--dataset", "synthetic",
                       "--epochs", "1", "--device", "cpu", "--out", "run2")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "$.backbone.nodes[0]: py:usernets:small?width=6 no longer has the cut after node " \
           "'gone'" in err
    assert not (user_folder / "run2").exists()


def test_a_users_network_is_promoted_confirmed_reported_and_noted(
        cli: Runner, db: str, user_folder: Path) -> None:
    """Promotion, confirmation, the HTML report (with its diagram of the units) and the
    dashboard's note, on a network the tool does not write, under FLOPs constraints."""
    rc, out, err = cli("run", "--backbone", "py:usernets:small", "--storage", db, "--study",
                       "p", "--n-trials", "2", "--cost-model", "flops", "--min-speedup", "1.2",
                       *FAST, "--epochs", "1", "--promote-top", "1", "--promote-epochs", "2",
                       "--promote-subset", "400", "--confirm-top", "1", "--confirm-seeds", "2")
    assert rc == 0, err
    study = optuna.load_study(study_name="p", storage=db)
    assert promoted(study, (2, 400))
    confirmed = confirmations(study)
    # at the promoted fidelity, on the trial's own seed and the 2 more asked for
    assert confirmed and all(c.fidelity == (2, 400) and len(c.seeds) == 3
                             for c in confirmed.values())
    best = study.trials[next(iter(confirmed))]
    note = optuna_dashboard.get_note(optuna.trial.Trial(study, optuna_api.trial_id(best)))
    assert note.startswith(f"### Trial {best.number}")
    assert "py:usernets:small x1, K=" in note and "from FLOPs" in note and "confirmed" in note
    rc, out, err = cli("report", "--storage", db, "--study", "p", "-o", "r.html",
                       "--csv", "t.csv")
    assert rc == 0, err
    html = (user_folder / "r.html").read_text()
    assert "py:usernets:small x1, K=" in html  # the diagram of the best trial's units
    assert len((user_folder / "t.csv").read_text().splitlines()) > len(study.trials)


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--backbone", "torchvision:no_such_net"],
     "torchvision has no classification model 'no_such_net'"),
    (["train", "--arch", "paper", "--backbone", "py:missing_module:f"],
     "module 'missing_module' does not import (ModuleNotFoundError"),
    (["train", "--arch", "paper", "--backbone", "py:usernets:not_a_module"],
     "not_a_module returned a str, not an nn.Module"),
    (["backbones", "py:usernets:branchy"],
     "cannot be traced by torch.fx at usernets.py:39 `if x.mean() > 0:` (TraceError: "),
    (["run", "--backbone", "py:usernets:small", "--width", "0.5"],
     "width must be 1, not 0.5"),
])
def test_bad_networks_are_one_line_and_exit_2(cli: Runner, db: str, user_folder: Path,
                                              argv: list[str], message: str) -> None:
    rc, out, err = cli(*argv, "--storage", db, *FAST) if argv[0] == "run" else cli(
        *argv, *(["--dataset", "synthetic", "--device", "cpu"] if argv[0] == "train" else []))
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_backbones_lists_the_units(cli: Runner, user_folder: Path) -> None:
    rc, out, err = cli("backbones", "py:usernets:small", "--image-size", "16")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("py:usernets:small: 4 units on 3x16x16 images")
    # unit, the node it ends at, the output shape, parameters, FLOPs
    assert lines[2].split()[:4] == ["0", "stem_2", "8x16x16", "240"]
    assert lines[5].split()[:3] == ["3", "relu_1", "16x8x8"]
