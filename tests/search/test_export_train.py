"""`export` and `train`: versioned files out of a study, full training from them, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from bwbpf.spaces import Decoupling, from_document, sample
from bwbpf.spaces.space import SearchSpace

from .conftest import FAST, Runner

SYN = ["--dataset", "synthetic", "--batch-size", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    from bwbpf.search.cli import main

    db = f"sqlite:///{tmp_path_factory.mktemp('db') / 'study.db'}"
    assert main(["-q", "run", "--storage", db, "--study", "so", "--n-trials", "4",
                 "--pruner", "none", *FAST]) == 0
    assert main(["-q", "run", "--storage", db, "--study", "mo", "--n-trials", "4",
                 "--pruner", "none", "--objectives", "accuracy,speedup", "--augment",
                 "--lr-schedule", "cosine", *FAST]) == 0
    optuna.create_study(study_name="empty", storage=db)
    return db


def test_export_round_trip_equals_what_the_trial_trained(cli: Runner, study_db: str,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "best.json"
    rc, stdout, err = cli("export", "--storage", study_db, "--study", "so", "-o", str(out))
    assert rc == 0, err
    best = optuna.load_study(study_name="so", storage=study_db).best_trial
    loaded = Decoupling.from_json(out.read_text())
    assert loaded == sample(optuna.trial.FixedTrial(best.params), SearchSpace())
    doc = json.loads(out.read_text())
    assert doc == json.loads(best.user_attrs["decoupling"])  # the document rides on the trial
    assert doc["provenance"]["trial"] == best.number and doc["provenance"]["study"] == "so"
    assert doc["metrics"]["val_accuracy"] == pytest.approx(best.value, abs=1e-5)
    assert doc["metrics"]["bp_lr"] == 0.05 and "bp_val_accuracy" in doc["metrics"]
    assert "sqlite:///" in doc["provenance"]["storage"]

    before = out.read_bytes()
    rc, _, err = cli("export", "--storage", study_db, "--study", "so", "--trial", "0",
                     "-o", str(out))
    assert rc == 2 and "exists; pass --force" in err and out.read_bytes() == before
    rc, _, _ = cli("export", "--storage", study_db, "--study", "so", "--trial", "0", "-o",
                   str(out), "--force")
    assert rc == 0 and json.loads(out.read_text())["provenance"]["trial"] == 0


def test_export_pareto_top_and_refusals(cli: Runner, study_db: str, tmp_path: Path) -> None:
    rc, out, _ = cli("export", "--storage", study_db, "--study", "mo", "--pareto", "-o",
                     str(tmp_path / "front"))
    front = optuna.load_study(study_name="mo", storage=study_db).best_trials
    files = sorted((tmp_path / "front").iterdir())
    assert rc == 0 and len(files) == len(front) >= 1
    for f in files:
        from_document(json.loads(f.read_text()))
    rc, _, _ = cli("export", "--storage", study_db, "--study", "so", "--top", "3", "-o",
                   str(tmp_path / "top"))
    assert rc == 0 and len(list((tmp_path / "top").iterdir())) == 3
    for argv, msg in [
        (["--study", "empty"], "has no finished trial to export yet"),
        (["--study", "nope"], "no study named 'nope' in this storage; studies: so, mo, empty"),
        (["--study", "so", "--trial", "99"], "--trial 99: no such trial"),
        (["--study", "so", "--pareto", "--top", "2"], "not allowed with argument"),
    ]:
        rc, _, err = cli("export", "--storage", study_db, *argv, "-o", str(tmp_path / "x"))
        assert rc == 2 and msg in err and err.count("\n") == 1


MALFORMED = {
    "truncated": lambda t: t[: len(t) // 2],
    "not JSON": lambda t: "backbone: vgg11\ncuts: [2, 5]\n",
    "binary": lambda t: "\x00\x01\x02garbage",
    "empty": lambda t: "",
    "missing field": lambda t: _edit(t, lambda d: d.pop("cuts")),
    "wrong type": lambda t: _edit(t, lambda d: d["backbone"].update(width="wide")),
    "cut out of range": lambda t: _edit(t, lambda d: d["cuts"].update(units=[2, 40])),
    "unsorted cuts": lambda t: _edit(t, lambda d: d["cuts"].update(units=[4, 2])),
    "unknown head": lambda t: _edit(t, lambda d: d["blocks"][0]["aux"].update(family="x")),
    "wrong schema id": lambda t: _edit(t, lambda d: d.update(schema="other/1")),
    "absurd numbers": lambda t: _edit(t, lambda d: d["blocks"][0]["optim"].update(lr=1e308)),
    "negative width": lambda t: _edit(t, lambda d: d["backbone"].update(width=-1)),
}
PATHS = {"missing field": "$: 'cuts'", "wrong type": "$.backbone.width",
         "cut out of range": "$.cuts.units[1]", "unsorted cuts": "$.cuts.units[1]",
         "unknown head": "$.blocks[0].aux.family", "wrong schema id": "$.schema",
         "absurd numbers": "$.blocks[0].optim.lr", "negative width": "$.backbone.width",
         "truncated": "not valid JSON", "not JSON": "not valid JSON", "binary": "not valid JSON",
         "empty": "not valid JSON"}


def _edit(text: str, change) -> str:  # type: ignore[no-untyped-def]
    doc = json.loads(text)
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_train_refuses_malformed_files(cli: Runner, tmp_path: Path, kind: str) -> None:
    good = Decoupling.paper_default("vgg11", width=0.125).to_json()
    bad = tmp_path / "arch.json"
    bad.write_text(MALFORMED[kind](good))
    rc, out, err = cli("train", "--arch", str(bad), "--out", str(tmp_path / "run"), *SYN)
    assert rc == 2 and PATHS[kind] in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def weights(run: Path, which: str = "blockwise") -> dict[str, torch.Tensor]:
    state = torch.load(run / which / "checkpoint.pt", weights_only=True)
    return dict(state["net"])


def test_stop_and_resume_equals_an_uninterrupted_run(cli: Runner, tmp_path: Path) -> None:
    common = ["train", "--arch", "paper", "--epochs", "2", "--compare-bp", *SYN]
    assert cli(*common, "--out", str(tmp_path / "a"))[0] == 0
    rc, out, _ = cli(*common, "--out", str(tmp_path / "b"), "--stop-after", "1")
    assert rc == 0 and "stopped after epoch 1" in out
    assert not (tmp_path / "b" / "metrics.json").exists()
    rc, out, err = cli(*common, "--out", str(tmp_path / "b"))
    assert rc == 2 and "holds an unfinished run; pass --resume" in err
    assert cli(*common, "--out", str(tmp_path / "b"), "--resume")[0] == 0
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert set(metrics) == {"blockwise", "backprop", "settings"}
    assert 0 < metrics["blockwise"]["test_accuracy"] <= 1
    assert 0 < metrics["backprop"]["test_accuracy"] <= 1
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert first["blockwise"]["test_accuracy"] == metrics["blockwise"]["test_accuracy"]
    rc, _, err = cli(*common, "--out", str(tmp_path / "b"))
    assert rc == 2 and "holds a finished run" in err


def test_train_follows_how_the_search_trained(cli: Runner, study_db: str,
                                              tmp_path: Path) -> None:
    # The export records the study's training set-up; `train` follows it unless told.
    for study, training in (("so", {"augment": False, "lr_schedule": "onecycle"}),
                            ("mo", {"augment": True, "lr_schedule": "cosine"})):
        out = tmp_path / f"{study}.json"
        assert cli("export", "--storage", study_db, "--study", study, "-o", str(out))[0] == 0
        assert json.loads(out.read_text())["training"] == training
    arch = str(tmp_path / "mo.json")
    common = ["train", "--arch", arch, "--epochs", "1", "--train-subset", "128", *SYN]
    assert cli(*common, "--out", str(tmp_path / "as-searched"))[0] == 0
    settings = json.loads((tmp_path / "as-searched" / "settings.json").read_text())
    # the schedule follows the file; augmentation is on for a full training unless told
    assert (settings["augment"], settings["lr_schedule"]) == (True, "cosine")
    assert cli(*common, "--no-augment", "--lr-schedule", "onecycle", "--out",
               str(tmp_path / "told"))[0] == 0
    settings = json.loads((tmp_path / "told" / "settings.json").read_text())
    assert (settings["augment"], settings["lr_schedule"]) == (False, "onecycle")


def test_train_reports_the_speedup_its_document_was_judged_by(cli: Runner, study_db: str,
                                                              tmp_path: Path) -> None:
    """metrics.json's ``speedup`` is the quantity the trial recorded: by the study's cost
    model (measured step times here), FLOPs' figure beside it, the model named; with
    --cost-model flops it is FLOPs'. BP is 1x by either."""
    arch = tmp_path / "so.json"
    assert cli("export", "--storage", study_db, "--study", "so", "-o", str(arch))[0] == 0
    trial = json.loads(arch.read_text())["metrics"]
    common = ["train", "--arch", str(arch), "--epochs", "1", "--train-subset", "128",
              "--compare-bp", *SYN]
    for given, model in ((None, "measured"), ("flops", "flops")):
        out = tmp_path / model
        rc, _, err = cli(*common, "--out", str(out), *(["--cost-model", given] if given else []))
        assert rc == 0, err
        run = json.loads((out / "metrics.json").read_text())
        got = run["blockwise"]
        assert got["cost_model"] == model == (given or trial["cost_model"])
        assert got["speedup_flops"] == trial["speedup_flops"]  # the same count as the trial's
        if model == "measured":
            assert len(got["block_seconds"]) == len(json.loads(arch.read_text())["blocks"])
            assert got["speedup"] == pytest.approx(
                got["backprop_seconds"] / max(got["block_seconds"]), abs=2e-4)
        else:
            assert got["speedup"] == got["speedup_flops"] and "block_seconds" not in got
        assert run["backprop"]["speedup"] == run["backprop"]["speedup_flops"] == 1.0
        assert run["settings"]["cost_model"] == model


def test_transfer_through_train(cli: Runner, tmp_path: Path) -> None:
    src = tmp_path / "vgg11.json"
    src.write_text(Decoupling.paper_default("vgg11", width=0.125).to_json())
    rc, _, err = cli("train", "--arch", str(src), "--backbone", "vgg13", "--epochs", "1",
                     "--out", str(tmp_path / "t"), *SYN)
    assert rc == 0, err
    doc = json.loads((tmp_path / "t" / "metrics.json").read_text())["blockwise"]["decoupling"]
    d = from_document(doc)
    assert d.backbone == "vgg13" and d.cuts == (4, 6, 8) and d.width == 0.125


def test_killed_between_epochs_resumes_without_losing_epochs(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "bwbpf.search", "-q", "train", "--arch", "uniform",
            "--epochs", "3", *SYN]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*base, "--out", str(tmp_path / "ref")], check=True, env=env,
                   capture_output=True, timeout=300)
    run = tmp_path / "run"
    proc = subprocess.Popen([*base, "--out", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    epochs = run / "blockwise" / "epochs.json"
    end = time.time() + 120
    while time.time() < end and not (epochs.exists() and json.loads(epochs.read_text())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    kept = json.loads(epochs.read_text())
    assert 1 <= len(kept) < 3 and not (run / "metrics.json").exists()
    subprocess.run([*base, "--out", str(run), "--resume"], check=True, env=env,
                   capture_output=True, timeout=300)
    after = json.loads(epochs.read_text())
    assert len(after) == 3 and after[: len(kept)] == kept
    a, b = weights(tmp_path / "ref"), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
