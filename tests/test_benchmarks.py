"""The benchmark scripts run end to end in a tiny setting, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_check_smoke_on_cpu() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke",
                        "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for line in ("3-trial study, wall", "images/s BP-free / BP",
                 "pipelined (streams) / sequential time"):
        assert line in r.stdout


@pytest.mark.integration
def test_workers_tiny() -> None:
    """`make bench`'s worker benchmark: one worker in process, then two on the same
    PostgreSQL study, each training its trials to the end."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "workers.py"), "--tiny"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for line in ("trials/hour: 2 workers / 1 worker", "storage time per trial / trial time"):
        assert line in r.stdout
    assert "2 trials of 1 epochs on 64 images" in r.stdout


@pytest.mark.integration
def test_quality_experiment_tiny(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--tiny",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    import json

    result = json.loads((tmp_path / "quality.json").read_text())
    rows = result["rows"]
    names = [(x["backbone"], x["row"]) for x in rows]
    for name in ("backprop", "paper (BP-free)", "searched, old space", "searched, new space",
                 "new space's winner, pool_linear heads"):
        assert ("vgg8b", name) in names
    lever = next(x for x in rows if x["row"] == "new space's winner, pool_linear heads")
    winner = next(x for x in rows if x["row"] == "searched, new space")
    assert lever["cuts"] == winner["cuts"]
    assert all(h.startswith("pool_linear/") for h in lever["heads"])
    assert ("vgg16", "searched on vgg8b, new space") in names  # the winner, transferred
    assert all(len(x["test"]) == 2 for x in rows)  # every row over the seeds
    budget = result["budget"]
    assert all({"speedup", "speedup_flops", "memory", "feasible"} <= set(x) for x in rows)
    # the budget curve: BP and the winner at every budget, each over the curve's seeds
    assert [p["epochs"] for p in result["curve"]] == budget["curve"]
    for p in result["curve"]:
        assert len(p["bp"]) == len(p["best"]) == len(budget["curve_seeds"])
    text = (tmp_path / "quality.md").read_text()
    assert "## Quality" in text and "| vgg16 | searched on vgg8b, new space |" in text
    assert "Budget curve" in text and (tmp_path / "quality_budget.png").stat().st_size > 1000
    # each search's line says how its trials ended, counting every trial its study holds
    import optuna

    storage = f"sqlite:///{tmp_path / 'out' / 'quality.db'}"
    for name, found in result["searches"].items():
        study = optuna.load_study(study_name=name, storage=storage)
        counted = sum(int(part.split()[0]) for part in found["states"].split(", "))
        assert counted == len(study.trials) and f"({found['states']}; " in text
    # a second run reuses every finished training and search: nothing is trained again
    runs = (tmp_path / "out" / "quality-runs.json").read_text()
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--tiny",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "quality-runs.json").read_text() == runs


@pytest.mark.integration
def test_setup_study_tiny() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "setup_study.py"), "--tiny",
                        "--variants", "abcde", "--extra-seeds", ""],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for key in "abcde":  # every variant trained BP and K=3 and has its row
        assert f"| ({key}) " in r.stdout


def test_fidelity_pick_is_the_expected_row_accuracy_of_a_fidelitys_first() -> None:
    """picked(score, row, k): a search that draws k decouplings and keeps the one ``score``
    ranks first gets, on average over the draws, this row-budget accuracy."""
    import itertools
    import random

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fidelity import picked

    rng = random.Random(1)
    score = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(7)]  # ties too
    row = [rng.random() for _ in range(7)]
    for k in range(1, 8):
        firsts = [row[min(sub, key=lambda i: (-score[i], i))]
                  for sub in itertools.combinations(range(7), k)]
        assert picked(score, row, k) == pytest.approx(sum(firsts) / len(firsts))
    assert picked(score, row, 1) == pytest.approx(sum(row) / 7)  # any one
    assert picked(row, row, 7) == max(row)  # ranked by the row budget itself: its best


def test_fidelity_promoted_pick_is_what_a_study_keeps() -> None:
    """promoted_pick: a study that draws k, promotes its top by the trial budget and keeps the
    first of those by the promoted fidelity gets, on average over the draws, this accuracy."""
    import random

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fidelity import picked, promoted_pick

    rng = random.Random(2)
    trial = [rng.random() for _ in range(7)]
    promoted = [rng.choice([0.1, 0.2, 0.3]) for _ in range(7)]  # ties too
    row = [rng.random() for _ in range(7)]
    for k in range(1, 8):
        # promoting one is keeping the trial budget's first; promoting all, the promoted's
        assert promoted_pick(trial, promoted, row, k, top=1) == pytest.approx(
            picked(trial, row, k))
        assert promoted_pick(trial, promoted, row, k, top=k) == pytest.approx(
            picked(promoted, row, k))
    # by hand: of all 3, the trial budget keeps items 0 and 1; item 1 is promoted's first
    assert promoted_pick([0.9, 0.8, 0.1], [0.2, 0.5, 0.9], [0.3, 0.6, 0.95], 3, top=2) == 0.6


def test_fidelity_passes_over_a_draw_whose_training_diverges(tmp_path: Path) -> None:
    """A decoupling whose loss turns non-finite has no accuracy to rank: the training is
    stored as diverged, and the set is drawn again without that decoupling."""
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fidelity
    from common import Runs

    b = replace(fidelity.TINY, image_size=16)
    shape = fidelity.data_shape(b)
    runs = Runs(tmp_path / "runs.json")
    first, *rest = (d for d, _ in zip(fidelity.draws("vgg8b", b, shape), range(b.n + 1)))
    # the first draw at the largest learning rate allowed, 3 epochs: its loss blows up
    longer = fidelity.Fidelity("longer", 3, 128, "val")
    blown = replace(first, optim=tuple(replace(o, lr=10.0, momentum=0.99) for o in first.optim))
    with pytest.raises(fidelity.Diverged, match="not finite"):
        fidelity.train(runs, b, blown, longer, 0)
    stored = runs.data[fidelity.run_key(b, blown, longer, 0)]
    assert "diverged" in stored and "val" not in stored
    with pytest.raises(fidelity.Diverged):  # from the file, without training again
        fidelity.train(Runs(tmp_path / "runs.json"), b, blown, longer, 0)
    assert fidelity.decouplings("vgg8b", b, shape, runs) == ([first, *rest[:-1]], [])
    # the first draw's training diverged the same way: the next draw takes its place
    runs.data[fidelity.run_key(b, first, longer, 0)] = stored
    assert fidelity.decouplings("vgg8b", b, shape, runs) == (rest, [first])


def test_a_diverging_training_is_a_result_of_the_long_experiments() -> None:
    """The transfer, Quality and budget-curve experiments keep a training whose loss turns
    non-finite as a row (the net tested as the divergence left it, and where it diverged)
    rather than stopping the whole experiment on it."""
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import train_and_test

    from bwbpf.spaces import Decoupling
    from bwbpf.trainers import load_data

    data = load_data("synthetic", train_subset=128, val_size=32, seed=0, download=False,
                     image_size=16)
    d = Decoupling.paper_default("vgg8b", width=0.125)
    blown = replace(d, optim=tuple(replace(o, lr=10.0, momentum=0.99) for o in d.optim))
    got = train_and_test(data, blown, epochs=3, seed=0, batch=32)
    assert "not finite" in got["diverged"]
    assert len(got["blocks"]) == d.num_blocks and got["test"] == got["blocks"][-1]
    assert all(0.0 <= x <= 1.0 for x in [got["val"], *got["blocks"]]) and got["seconds"] > 0
    assert "diverged" not in train_and_test(data, d, epochs=1, seed=0, batch=32)


@pytest.mark.integration
def test_fidelity_tiny(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict, replace

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fidelity import TINY

    # tables another run wrote: resnet18's at this budget is kept, vgg16's at another is not
    budget = json.loads(json.dumps(asdict(replace(TINY, image_size=16))))
    (tmp_path / "fidelity.json").write_text(json.dumps({
        "resnet18": {"budget": budget, "rows": []},
        "vgg16": {"budget": {**budget, "n": 99}, "rows": []}}))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fidelity.py"), "--tiny",
                        "--backbones", "vgg8b", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    written = json.loads((tmp_path / "fidelity.json").read_text())
    assert set(written) == {"vgg8b", "resnet18"}
    result = written["vgg8b"]
    assert len(result["decouplings"]) == 4  # distinct structures, feasible by construction
    names = [row["fidelity"] for row in result["rows"]]
    assert names == ["trial", "more data"]
    for row in result["rows"]:
        assert row["n"] == 4 and -1.0 <= row["tau"] <= 1.0 and -1.0 <= row["rho"] <= 1.0
        # a fidelity's pick is one of the set at the row budget; no pick beats the best
        assert 0.0 <= row["pick_of_k"] <= row["best_of_k"] <= 1.0
    # a second run reuses every finished training
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fidelity.py"), "--tiny",
                            "--backbones", "vgg8b", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and json.loads(
        (tmp_path / "fidelity.json").read_text())["vgg8b"]["rows"] == result["rows"]


@pytest.mark.integration
def test_transfer_tiny(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer.py"), "--tiny",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    import json

    result = json.loads((tmp_path / "transfer.json").read_text())["targets"]
    [(name, rows)] = result.items()
    assert name.startswith("vgg8b -> vgg11")
    by = {row["row"]: row for row in rows}
    assert set(by) == {"constraint-keeping transfer", "stage-rule transfer", "backprop", "paper",
                       "direct search (3 trials)", "seeded search (2 trials)",
                       "constraint-keeping transfer, pool_linear heads"}
    kept = by["constraint-keeping transfer"]
    assert kept["feasible"] or "no placement" in kept["note"]  # kept, or refused saying why
    for row in rows:
        assert all(0.0 <= t <= 1.0 for t in row["test"])
    # a second run (from the caches) over its pairs keeps another pair's rows written before
    path = tmp_path / "transfer.json"
    doc = json.loads(path.read_text())
    doc["targets"]["resnet18 -> resnet34 x0.125, 2 epochs"] = rows
    path.write_text(json.dumps(doc))
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer.py"), "--tiny",
                            "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert set(json.loads(path.read_text())["targets"]) == {
        name, "resnet18 -> resnet34 x0.125, 2 epochs"}


def test_transfer_table_keeps_rows_another_run_wrote_since_this_one_started(
        tmp_path: Path) -> None:
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from transfer import keep

    path, budget = tmp_path / "transfer.json", {"epochs": [3, 10]}
    keep(path, budget, "a, 3 epochs", [{"row": "a3"}])
    keep(path, budget, "b, 3 epochs", [{"row": "b3"}])  # another process, same file
    keep(path, budget, "a, 10 epochs", [{"row": "a10"}])
    keep(path, budget, "a, 3 epochs", [{"row": "a3 again"}])  # a rerun replaces its own rows
    targets = json.loads(path.read_text())["targets"]
    assert targets == {"a, 3 epochs": [{"row": "a3 again"}], "b, 3 epochs": [{"row": "b3"}],
                       "a, 10 epochs": [{"row": "a10"}]}
    keep(path, {"epochs": [2]}, "c, 2 epochs", [])  # another budget starts the table anew
    assert list(json.loads(path.read_text())["targets"]) == ["c, 2 epochs"]
    assert [p.name for p in tmp_path.iterdir()] == ["transfer.json"]  # no temporary left


@pytest.mark.integration
def test_search_efficiency_tiny(tmp_path: Path) -> None:
    import json

    # a row another run (another backbone, other --seeds) wrote before: kept, and counted in
    # the verdict
    other = {"backbone": "resnet18", "seed": 0, "reach": 0.25,
             "test": {"default": 0.5, "random": 0.25, "reference": 0.125},
             "spent": {"default": 10, "random": 20}}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dataclasses import asdict

    from search_efficiency import TINY

    (tmp_path / "search_efficiency.json").write_text(json.dumps(
        {"budget": {**asdict(TINY), "seeds": [5]}, "results": [other]}))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_efficiency.py"),
                        "--tiny", "--backbones", "vgg8b", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    written = json.loads((tmp_path / "search_efficiency.json").read_text())
    kept, result = written["results"]
    assert kept == other
    assert written["budget"]["seeds"] == [0]  # the seeds of the rows: this run's, resnet18's
    assert "resnet18: default search - random search" in r.stdout
    assert set(result["test"]) == {"default", "random", "reference"}
    assert all(0.0 <= v <= 1.0 for v in result["test"].values())
    # random search trained at least as much as the default search's search phase, not more
    # than one trial beyond it (it grows a trial at a time)
    assert result["spent"]["default"] > 0 and result["spent"]["random"] > 0
    assert result["reach"] is None or 0 < result["reach"] <= 1.5
    assert "share of random search's training" in r.stdout

    # another promotion on copies of these searches: nothing searched again, the source left
    # as it was, every promoted trial ranked by the new (larger) fidelity
    import optuna

    from bwbpf.reports.record import ranked
    from bwbpf.reports.study_attrs import confirmations

    source = tmp_path / "out" / "search-efficiency.db"
    before = source.read_bytes()
    # trainings the new folder already holds (a run stopped after copying them) are kept
    (tmp_path / "b" / "out").mkdir(parents=True)
    mine = {"kept": {"test": 0.5}}
    (tmp_path / "b" / "out" / "search-efficiency-runs.json").write_text(json.dumps(mine))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_efficiency.py"),
                        "--tiny", "--backbones", "vgg8b", "--promote", "1,3,256",
                        "--studies-from", str(tmp_path), "--out", str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert source.read_bytes() == before
    runs = json.loads((tmp_path / "b" / "out" / "search-efficiency-runs.json").read_text())
    assert runs["kept"] == mine["kept"] and len(runs) > 1  # and the source's rows beside it
    assert not list((tmp_path / "b" / "out").glob("*.part"))
    for name in ("default-vgg8b-0", "random-vgg8b-0"):
        old, new = (optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
                    for db in (source, tmp_path / "b" / "out" / "search-efficiency.db"))
        assert [t.params for t in new.trials] == [t.params for t in old.trials]
        # the same trials, not trained again
        assert [t.datetime_start for t in new.trials] == [t.datetime_start for t in old.trials]
        assert confirmations(new)[ranked(new)[0].number].fidelity == (3, 256)
        assert confirmations(old)[ranked(old)[0].number].fidelity == (2, 256)
    again = json.loads((tmp_path / "b" / "search_efficiency.json").read_text())
    assert again["budget"]["promote"] == [1, 3, 256]
    assert [x["seed"] for x in again["results"]] == [0]  # its own budget: no other run's rows


@pytest.mark.parametrize("argv", [["--promote", "1,0,256"], ["--promote", "3,x"],
                                  ["--studies-from", "no-such-folder"]])
def test_search_efficiency_refuses_bad_options(tmp_path: Path, argv: list[str]) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_efficiency.py"),
                        "--tiny", "--out", str(tmp_path), *argv],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout == "" and argv[0] in r.stderr.splitlines()[-1]
    assert not (tmp_path / "search_efficiency.json").exists()


def test_search_efficiency_refuses_to_copy_a_folder_onto_itself(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    db = tmp_path / "out" / "search-efficiency.db"
    db.write_bytes(b"stored")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_efficiency.py"),
                        "--tiny", "--out", str(tmp_path), "--studies-from",
                        str(tmp_path / "." / "out" / "..")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--studies-from" in r.stderr.splitlines()[-1]
    assert db.read_bytes() == b"stored"


@pytest.mark.integration
def test_budget_curve_tiny(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "budget_curve.py"), "--tiny",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    import json

    points = json.loads((tmp_path / "budget_curve.json").read_text())["points"]
    assert [p["epochs"] for p in points] == [1, 2]
    for p in points:
        assert len(p["searched"]["blocks"]) == 4 and len(p["backprop"]["blocks"]) == 1
    levers = ("searched, momentum heads", "searched, last block lr x2")
    assert all(lever in points[0] for lever in levers)
    for lever in levers:  # at the last budget only where it beat the winner at the one before
        beat = points[0][lever]["mean"] > points[0]["searched"]["mean"]
        assert (lever in points[1]) == beat, lever
    assert points[0]["backprop"]["speedup_flops"] == 1.0
    assert points[0]["searched"]["speedup_flops"] > 1.0


@pytest.mark.integration
def test_reference_rows_tiny(tmp_path: Path) -> None:
    import json
    import re

    script = str(ROOT / "benchmarks" / "reference_rows.py")
    r = subprocess.run([sys.executable, script, "--tiny", "--backbones", "vgg8b", "--references",
                        "predsim,auglocal", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["vgg8b predsim", "vgg8b auglocal"]
    tests = [float(m.group(1)) for line in lines if (m := re.search(r"test (\S+) at", line))]
    assert len(tests) == 2 and all(0.0 <= t <= 1.0 for t in tests)
    runs = json.loads((tmp_path / "out" / "search-efficiency-runs.json").read_text())
    assert len(runs) == 2  # one row seed each, kept for the next run
    bad = subprocess.run([sys.executable, script, "--tiny", "--references", "predsim,nope",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nope" in bad.stderr.splitlines()[-1]
