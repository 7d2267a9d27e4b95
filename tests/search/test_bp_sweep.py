"""Hostile input, fourth round (items 6 and 12): a learning rate that diverges, in the BP sweep
and in `train`, and a BP sweep interrupted halfway. A diverging point is recorded and the
study goes on; `train` says in one line which block diverged where; a rerun of an interrupted
sweep trains only the points still missing, and ends where an uninterrupted one does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest

from bwbpf.reports.study_attrs import BP_BASELINE
from bwbpf.search.run import baselines

from .conftest import FAST, Runner

QUICK = ["--n-trials", "1", "--references", "paper", "--pruner", "none", "--cost-model",
         "flops"]
# At this width SGD at lr 10 diverges on the synthetic set by epoch 2; lr 0.05 trains.
DIVERGING = ["--width", "0.5"]
TRAIN = ["--dataset", "synthetic", "--train-subset", "128", "--val-size", "64",
         "--batch-size", "16", "--epochs", "2", "--device", "cpu", *DIVERGING]


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


def stored_bp(db: str, study: str = "s") -> dict[str, Any]:
    entry: dict[str, Any] = optuna.load_study(study_name=study,
                                              storage=db).user_attrs[BP_BASELINE]["vgg8b"]
    return entry


def test_a_diverging_rate_is_a_point_of_the_sweep_and_the_study_goes_on(cli: Runner,
                                                                       db: str) -> None:
    rc, out, err = cli("-q", "run", "--storage", db, "--study", "s", *FAST, *QUICK,
                       *DIVERGING, "--bp-lrs", "0.05,10")
    assert rc == 0, err
    bp = stored_bp(db)
    by_lr = {p["lr"]: p for p in bp["sweep"]}
    assert by_lr[10.0]["val_accuracy"] is None
    assert re.fullmatch(r"block 1 loss is not finite \(epoch \d+, by step \d+\)",
                        by_lr[10.0]["diverged"])
    assert bp["best_lr"] != 10.0 and by_lr[0.05]["val_accuracy"] is not None
    assert bp["val_accuracy"] == max(p["val_accuracy"] for p in bp["sweep"]
                                     if p["val_accuracy"] is not None)
    n = len(bp["sweep"])
    assert "in a sweep, 1 diverged)" in out and f"the best of {n} in a sweep" in out
    # the report reads the diverged point too
    rc, _, err = cli("-q", "report", "--storage", db, "--study", "s", "-o",
                     str(Path(db[len("sqlite:///"):]).with_name("r.html")))
    assert rc == 0, err


def test_a_sweep_that_diverges_at_every_rate_is_one_line(cli: Runner, db: str) -> None:
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "s", *FAST, *QUICK,
                     *DIVERGING, "--bp-lrs", "10")
    assert rc == 1 and one_line(err), err
    assert re.fullmatch(r"bwbpf-search: --bp-lrs 10: end-to-end BP on vgg8b diverged "
                        r"at every rate \(at lr 10: block 1 loss is not finite \(epoch \d+, "
                        r"by step \d+\)\); give smaller rates\n", err), err


@pytest.mark.parametrize(("flags", "line"), [
    (["--lr", "10"], r"blockwise training diverged: block \d+ loss is not finite "
                     r"\(epoch \d+, by step \d+\); try a lower --lr"),
    (["--compare-bp", "--bp-lr", "10"], r"backprop training diverged: block 1 loss is not "
                                        r"finite \(epoch \d+, by step \d+\); try a lower "
                                        r"--bp-lr")])
def test_train_says_which_block_diverged_where_in_one_line(cli: Runner, tmp_path: Path,
                                                           flags: list[str], line: str) -> None:
    rc, _, err = cli("-q", "train", "--out", str(tmp_path / "run"), *TRAIN, *flags)
    assert rc == 1 and one_line(err), err
    assert re.fullmatch(f"bwbpf-search: {line}\n", err), err


def without_times(entry: dict[str, Any]) -> dict[str, Any]:
    """A BP entry without its wall-clock seconds (the one figure two trainings never share)."""
    return {**entry, "sweep": [{k: v for k, v in p.items() if k != "train_seconds"}
                               for p in entry["sweep"]]}


def test_an_interrupted_sweep_resumes_after_its_last_stored_point(
        cli: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = ["run", "--study", "s", *FAST, *QUICK, "--bp-lrs", "0.02,0.05"]
    whole, halted = (f"sqlite:///{tmp_path / name}" for name in ("whole.db", "halted.db"))
    rc, _, err = cli("-q", *run, "--storage", whole)
    assert rc == 0, err

    real, calls = baselines.fit, []

    def interrupted(*args: Any, **kwargs: Any) -> Any:  # Ctrl-C in the second BP training
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(baselines, "fit", interrupted)
    rc, _, err = cli("-q", *run, "--storage", halted)
    assert rc == 130, err
    assert [p["lr"] for p in stored_bp(halted)["sweep"]] == [0.02]  # stored as it ended
    monkeypatch.undo()

    rc, _, err = cli(*run, "--storage", halted)  # not quiet: the sweep's lines
    assert rc == 0, err
    assert "BP baseline vgg8b lr 0.02: as an earlier run trained it" in err
    assert "BP baseline vgg8b lr 0.02: val" not in err  # not trained again
    assert "BP baseline vgg8b lr 0.05: val" in err
    assert without_times(stored_bp(halted)) == without_times(stored_bp(whole))
