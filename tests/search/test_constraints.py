"""Constraints (--min-speedup, --max-memory): infeasible samples are rejected untrained, the
budget counts trained trials, baselines are marked, winners are feasible, bad input refused."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from bwbpf.reports import trials_frame
from bwbpf.reports.record import (
    TrialRecord,
    best_trial,
    describe_counts,
    save,
    state_counts,
)
from bwbpf.reports.standing import summary_rows
from bwbpf.search.study import budget
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.study.stored_settings import conflicts
from bwbpf.search.trial import constraints
from bwbpf.search.trial.constraints import (
    Constraint,
    RejectionGuard,
    TooManyRejected,
    judge,
)
from bwbpf.search.trial.reach import Pieces, best_speedup, least_memory, profile
from bwbpf.search.winners.exporting import choose
from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, SearchSpace, build
from bwbpf.spaces.errors import ConfigError
from bwbpf.trainers import measure_cost
from bwbpf.trainers.cost import Ratios
from bwbpf.trainers.timing import StepTimer

from .conftest import FAST, Runner

SMALL = [*FAST, "--train-subset", "200", "--val-size", "100"]
# Exact figures (2.11x, 3.07x) are FLOPs'; the measured speed-up depends on the machine.
FLOPS = ["--cost-model", "flops"]
# About a third of the default space's random samples on the synthetic set meet both; drawn
# cut sets that break them are rejected, not moved (search.trial.placement moves them by default).
LOOSE = ["--min-speedup", "1.5", "--max-memory", "0.8", "--cut-placement", "as-drawn"]
NAMES = {"min_speedup", "max_memory"}


def load(db: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=db)


def split(study: optuna.Study) -> tuple[list, list]:
    """(trained, rejected) trials of a study."""
    trials = study.get_trials()
    rejected = [t for t in trials if TrialRecord.of(t).rejected is not None]
    return [t for t in trials if t not in rejected], rejected


# ---------------------------------------------------------------- end to end
def test_a_constrained_study_trains_only_feasible_samples_and_resumes(cli: Runner, db: str
                                                                        ) -> None:
    argv = ["run", "--storage", db, "--study", "c", "--no-baselines", "--pruner", "none",
            *SMALL, *LOOSE]
    rc, out, err = cli(*argv, "--n-trials", "3")
    assert rc == 0, err
    trained, rejected = split(load(db, "c"))
    assert len(trained) == 3 and rejected  # --n-trials counts trained trials only
    for t in trained:
        rec = TrialRecord.of(t)
        assert t.state == TrialState.COMPLETE and rec.curve and rec.train_seconds
        assert rec.speedup is not None and rec.memory_ratio is not None
        assert rec.speedup >= 1.5 and rec.memory_ratio <= 0.8
        # the sampler sees the feasible side too, with the values the record shows (which
        # rounds them to 4 places)
        assert t.constraints == pytest.approx({"min_speedup": 1.5 - rec.speedup,
                                               "max_memory": rec.memory_ratio - 0.8},
                                              abs=6e-5)
    for t in rejected:
        rec = TrialRecord.of(t)
        assert t.state == TrialState.PRUNED
        assert not rec.curve and rec.train_seconds is None and not t.intermediate_values
        assert re.fullmatch(r"(speed-up \d\.\d+x < 1\.50(00)?x|memory \d\.\d+ of BP's > 0\.80(00)?)"
                            r"(; memory \d\.\d+ of BP's > 0\.80(00)?)?", rec.rejected or "")
        assert set(t.constraints) == NAMES and max(t.constraints.values()) > 0
        assert rec.decoupling() is not None  # what was rejected stays visible
    first = next(line for line in out.splitlines() if line.startswith("study c: "))
    assert first.endswith(f"{len(rejected)} rejected by the constraints")
    assert any(f"trial {t.number}: rejected (" in out + err for t in rejected)
    frame = trials_frame(load(db, "c")).set_index("number")
    assert frame.loc[rejected[0].number, "rejected"] == TrialRecord.of(rejected[0]).rejected
    assert frame.loc[trained[0].number, ["rejected", "infeasible"]].isna().all()

    # a rerun with the same total runs nothing; a larger total trains only what is missing
    rc, _, _ = cli("-q", *argv, "--n-trials", "3")
    assert rc == 0 and len(load(db, "c").get_trials()) == len(trained) + len(rejected)
    rc, _, err = cli("-q", *argv, "--n-trials", "4")
    assert rc == 0, err
    more, _ = split(load(db, "c"))
    assert len(more) == 4 and [t.number for t in more[:3]] == [t.number for t in trained]


def test_baselines_that_break_a_constraint_still_train_and_are_marked(
        cli: Runner, db: str, tmp_path: Path) -> None:
    # the paper's decoupling reaches 2.11x here, the uniform split 3.07x
    rc, out, err = cli("run", "--storage", db, "--study", "b", "--n-trials", "2",
                       "--pruner", "none", "--min-speedup", "2.5", *SMALL, *FLOPS)
    assert rc == 0, err
    study = load(db, "b")
    paper, uniform = study.get_trials()
    p, u = TrialRecord.of(paper), TrialRecord.of(uniform)
    assert (p.baseline, u.baseline) == ("paper", "uniform")
    assert paper.state == TrialState.COMPLETE and p.curve and p.train_seconds  # trained
    assert p.rejected is None and p.infeasible == "speed-up 2.11x < 2.50x"
    assert u.infeasible is None and paper.constraints["min_speedup"] > 0
    best = best_trial(study)
    assert best is not None and best.number == uniform.number
    assert "paper    trial 0: val" in out and "infeasible: speed-up 2.11x < 2.50x" in out
    assert trials_frame(study).set_index("number").loc[0, "infeasible"] == p.infeasible
    rc, files, err = cli("export", "--storage", db, "--study", "b", "--top", "2",
                         "-o", str(tmp_path))
    assert rc == 0, err
    assert [Path(f).name for f in files.split()] == ["b-trial1.json"]
    rc, _, err = cli("report", "--storage", db, "--study", "b", "-o", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert rc == 0 and "constraints min_speedup 2.5" in page
    assert "<td>paper</td><td>0</td>" in page and "infeasible: speed-up 2.11x &lt; 2.50x" in page


def test_multi_objective_studies_take_the_constraints(cli: Runner, db: str, tmp_path: Path
                                                      ) -> None:
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "mo", "--n-trials", "2",
                     "--objectives", "accuracy,speedup", "--no-baselines", "--pruner", "none",
                     *SMALL, *LOOSE)
    assert rc == 0, err
    study = load(db, "mo")
    trained, rejected = split(study)
    assert len(trained) == 2 and rejected
    assert all(t.values[1] >= 1.5 and max(t.constraints.values()) <= 0 for t in trained)
    assert all(t.state == TrialState.PRUNED and t.values is None for t in rejected)
    rc, files, err = cli("export", "--storage", db, "--study", "mo", "--pareto",
                         "-o", str(tmp_path))
    assert rc == 0, err
    numbers = {json.loads(Path(f).read_text())["provenance"]["trial"] for f in files.split()}
    assert numbers and numbers <= {t.number for t in trained}


def test_a_run_that_only_rejects_stops_in_one_line(cli: Runner, db: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constraints, "MAX_REJECTED_IN_A_ROW", 3)
    # reachable (3.07x) by one cut set with linear heads only: random samples miss it
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "g", "--n-trials", "2",
                     "--no-baselines", "--sampler", "random", "--min-speedup", "3.05", *SMALL,
                     *FLOPS, "--cut-placement", "as-drawn")
    assert rc == 2
    assert re.fullmatch(r"bwbpf-search: error: 3 samples in a row were rejected by "
                        r"--min-speedup 3\.05 \(the best seen: \d\.\d\dx\); .*\n", err)
    trained, rejected = split(load(db, "g"))
    assert not trained and len(rejected) == 3


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bwbpf.search.cli import main

    path = tmp_path_factory.mktemp("db") / "study.db"
    assert main(["-q", "run", "--storage", f"sqlite:///{path}", "--study", "keep",
                 "--n-trials", "1", "--no-baselines", "--pruner", "none", "--min-speedup",
                 "1.5", *SMALL, *FLOPS]) == 0
    return path


@pytest.fixture(scope="module")
def space_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spaces")
    (root / "word.yaml").write_text("min_speedup: fast\n")
    (root / "big.json").write_text('{"max_memory": 2}')
    (root / "far.yaml").write_text("min_speedup: 1.5\nmax_memory: 0.1\n")
    return root


BAD = [
    (["--min-speedup", "0"], "argument --min-speedup: 0 must be a positive number"),
    (["--min-speedup", "nan"], "argument --min-speedup: nan must be a positive number"),
    (["--min-speedup", "-1"], "argument --min-speedup: -1 must be a positive number"),
    (["--max-memory", "0"], "argument --max-memory: 0 must be in (0, 1]"),
    (["--max-memory", "1.5"], "argument --max-memory: 1.5 must be in (0, 1]"),
    (["--min-speedup", "5"],
     "--min-speedup 5: the space reaches at most 3.07x (vgg8b x0.25, K<=4)"),
    (["--min-speedup", "2", "--max-blocks", "2"],
     "--min-speedup 2: the space reaches at most 1.94x (vgg8b x0.25, K<=2)"),
    (["--max-memory", "0.1"],
     "--max-memory 0.1: the space needs at least 0.49 of BP's activation memory"),
    (["--min-speedup", "2.5", "--max-memory", "0.5"],
     "--min-speedup 2.5 with --max-memory 0.5: no decoupling of the space meets both; at "
     "2.5x or more it needs at least 0.58 of BP's activation memory (vgg8b x0.25, K<=4)"),
    (["--space", "{word.yaml}"], "min_speedup: 'fast' must be a number"),
    (["--space", "{big.json}"],
     "space.max_memory: 2 must be in (0, 1]: a fraction of BP's activation"),
    (["--space", "{far.yaml}"], "--max-memory 0.1: the space needs at least 0.49 of BP's"),
    (["--min-speedup", "2"], "was created with space.min_speedup=1.5; this run asks "
                             "space.min_speedup=2.0 (use another --study)"),
]  # a rerun without the flag keeps the study's constraint: tests/search/test_space_adoption.py


@pytest.mark.parametrize(("flags", "message"), BAD, ids=[" ".join(c[0]) or "none" for c in BAD])
def test_bad_constraints_are_refused_in_one_line(cli: Runner, existing: Path, space_files: Path,
                                                 flags: list[str], message: str) -> None:
    flags = [f.replace("{", str(space_files) + "/").replace("}", "") for f in flags]
    before = hashlib.sha256(existing.read_bytes()).hexdigest()
    rc, out, err = cli("run", "--storage", f"sqlite:///{existing}", "--study", "keep",
                       "--n-trials", "2", "--no-baselines", "--pruner", "none", *SMALL, *FLOPS,
                       *flags)
    assert rc == 2, (out, err)
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert hashlib.sha256(existing.read_bytes()).hexdigest() == before


def test_an_unconstrained_study_refuses_a_constrained_rerun(cli: Runner, db: str) -> None:
    argv = ["-q", "run", "--storage", db, "--study", "u", "--n-trials", "1", "--no-baselines",
            "--pruner", "none", *SMALL]
    assert cli(*argv)[0] == 0
    rc, _, err = cli(*argv, "--max-memory", "0.8")
    assert rc == 2 and "created with space.max_memory=None; this run asks space.max_memory=0.8" \
        in err


def test_a_study_stored_before_the_constraints_existed_still_resumes() -> None:
    s = SearchSettings(study="old", storage="sqlite:///x.db")
    stored = s.record()
    for key in ("min_speedup", "max_memory"):
        del stored["space"][key]
    assert conflicts(s, stored) == []
    constrained = SearchSettings(study="old", storage="sqlite:///x.db",
                                 space=SearchSpace(min_speedup=2))
    assert conflicts(constrained, stored) == [("space.min_speedup", None, 2.0)]


@pytest.mark.parametrize(("field", "value"), [("min_speedup", 0), ("min_speedup", True),
                                              ("min_speedup", float("inf")),
                                              ("max_memory", 1.01), ("max_memory", -0.5)])
def test_the_space_refuses_bad_constraint_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"space.{field}: "):
        SearchSpace.from_mapping({field: value})


# ---------------------------------------------------------------- units
def pieces(backbone: str, space: SearchSpace, timer: StepTimer | None = None) -> Pieces:
    return Pieces(backbone, space.width, in_channels=3, image_size=(16, 16), num_classes=10,
                  timer=timer)


@pytest.mark.integration  # builds and counts every cut set's net whole
@pytest.mark.parametrize("backbone,aux", [
    ("vgg8b", AuxSpec("linear")), ("vgg8b", AuxSpec("conv", 1, 0.5, "predsim", 32)),
    ("vgg8b", AuxSpec("downstream", 1, 0.5, "infopro", 32)), ("resnet18", AuxSpec("linear")),
    ("resnet18", AuxSpec("downstream", 1, 0.5, "infopro", 32))],
    ids=["vgg8b-linear", "vgg8b-conv-predsim", "vgg8b-downstream-infopro", "resnet18-linear",
         "resnet18-downstream-infopro"])
def test_the_programme_is_what_measure_cost_gives_for_every_cut_set(backbone: str,
                                                                    aux: AuxSpec) -> None:
    # a space whose cheapest head is ``aux`` everywhere, and every decoupling with it
    space = SearchSpace(backbones=(backbone,), heads=(aux.family,), head_widths=(0.5, 1.0),
                        losses=(aux.loss,), max_blocks=4)
    pcs = pieces(backbone, space)
    p, n = profile(pcs, space), pcs.units
    measured = []
    for k in (2, 3, 4):
        for cuts in itertools.combinations(range(1, n), k - 1):
            d = Decoupling(backbone, cuts, (aux,) * len(cuts), (BlockOptim(),) * k, 0.25)
            c = measure_cost(build(d, 10, 3, 16), 3, (16, 16))
            bounds = (0, *cuts, n)
            assert [p.block(a, b, 0) for a, b in zip(bounds, bounds[1:])] == c.block_flops
            assert [p.block(a, b, 1) for a, b in zip(bounds, bounds[1:])] == c.block_saved_bytes
            assert (p.backprop(0), p.backprop(1)) == (c.backprop_flops, c.backprop_saved_bytes)
            # the figures a placement is judged on: the same numbers, through the same rule
            assert pcs.of(d) == c.ratios
            measured.append((c.speedup, c.memory_ratio))
    # the search over cut sets finds the best of them
    assert best_speedup(p, space) == pytest.approx(max(s for s, _ in measured))
    assert least_memory(p, space) == pytest.approx(min(m for _, m in measured))
    at = sorted(s for s, _ in measured)[len(measured) // 2]  # half the cut sets reach it
    assert least_memory(p, space, at) == pytest.approx(min(m for s, m in measured if s >= at))


def test_the_measured_programme_is_what_the_timer_predicts_for_every_cut_set() -> None:
    space = SearchSpace(heads=("conv",), head_widths=(0.5, 1.0), losses=("pred",), max_blocks=3)
    aux = AuxSpec("conv", 1, 0.5, min_channels=space.head_min_channels)
    timer = StepTimer(torch.device("cpu"), 8, in_channels=3, image_size=(16, 16),
                      num_classes=10, repeats=1, warmup=0)
    pcs = pieces("vgg8b", space, timer)
    p = profile(pcs, space)
    speedups = []
    for k in (2, 3):
        for cuts in itertools.combinations(range(1, 6), k - 1):
            d = Decoupling("vgg8b", cuts, (aux,) * len(cuts), (BlockOptim(),) * k, 0.25)
            t = timer.predict(d)  # the same cached pieces: sums must agree
            bounds = (0, *cuts, 6)
            assert [p.block(a, b, 0) for a, b in zip(bounds, bounds[1:])] == pytest.approx(
                t.block_seconds)
            assert p.backprop(0) == pytest.approx(t.backprop_seconds)
            assert pcs.of(d).speedup == pytest.approx(t.speedup)
            speedups.append(t.speedup)
    assert best_speedup(p, space) == pytest.approx(max(speedups))


def test_judge_stores_both_sides_and_names_what_broke() -> None:
    study = optuna.create_study()
    rules = [Constraint("min_speedup", 2.0), Constraint("max_memory", 0.5)]
    met, broken = study.ask(), study.ask()
    assert judge(met, rules, Ratios(2.5, 1.0, 1.0, 0.4)) is None
    assert judge(broken, rules, Ratios(1.995, 1.0, 1.0, 0.7)) == (
        "speed-up 1.9950x < 2.0000x; memory 0.70 of BP's > 0.50")
    study.tell(met, 1.0)
    study.tell(broken, state=TrialState.PRUNED)
    met_t, broken_t = study.get_trials()
    assert met_t.constraints == pytest.approx({"min_speedup": -0.5, "max_memory": -0.1})
    assert broken_t.constraints == pytest.approx({"min_speedup": 0.005, "max_memory": 0.2})


def test_rejected_trials_use_no_budget_and_never_win() -> None:
    study = optuna.create_study(direction="maximize")
    for value, rec in [(0.9, TrialRecord(baseline="paper", infeasible="speed-up 1.1x < 2x")),
                       (0.5, TrialRecord()), (None, TrialRecord(rejected="speed-up 1x < 2x")),
                       (None, TrialRecord(pruned_at=1))]:
        trial = study.ask()
        save(trial, TrialRecord(), rec)
        if value is None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
    assert budget.used(study) == 3
    best = best_trial(study)
    assert best is not None and best.number == 1  # not the more accurate infeasible one
    assert [t.number for t in choose(study, trial=None, pareto=False, top=5)] == [1]
    assert state_counts(study) == {"complete": 2, "pruned": 1, "rejected": 1}
    assert describe_counts(state_counts(study)).endswith("1 rejected by the constraints")
    assert summary_rows(study)[0].trial == 1


def test_the_guard_counts_rejections_in_a_row_and_names_the_best_seen() -> None:
    guard = RejectionGuard([Constraint("min_speedup", 3.0), Constraint("max_memory", 0.9)],
                           limit=3)

    def trial(rec: TrialRecord) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=rec.attrs())

    rejected = [TrialRecord(speedup=s, memory_ratio=0.5, rejected="x") for s in (2.1, 2.6)]
    for rec in rejected:
        guard(optuna.create_study(), trial(rec))
    guard(optuna.create_study(), trial(TrialRecord(speedup=3.2, memory_ratio=0.5)))
    for rec in rejected:  # a trained trial started the count again
        guard(optuna.create_study(), trial(rec))
    with pytest.raises(TooManyRejected) as e:
        guard(optuna.create_study(), trial(TrialRecord(speedup=1.0, memory_ratio=0.5,
                                                       rejected="x")))
    assert str(e.value).startswith("3 samples in a row were rejected by --min-speedup 3 "
                                   "(the best seen: 2.60x); ")
