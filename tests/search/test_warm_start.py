"""`run --warm-start FILE`: a study on a target net started from a winner on another member."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from bwbpf.reports.frame import trials_frame
from bwbpf.reports.note import markdown
from bwbpf.reports.record import TrialRecord
from bwbpf.search.command_line.parser import parse
from bwbpf.search.run.warm_start import NEIGHBOURS
from bwbpf.search.winners.carry import carry
from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, SearchSpace, UserError, to_document
from bwbpf.spaces.limits import Limits

from .conftest import FAST, Runner

SMALL = [*FAST, "--epochs", "1", "--train-subset", "128", "--val-size", "64",
         "--cost-model", "flops", "--sampler", "random", "--pruner", "none", "--no-baselines"]
SOURCE = Decoupling("vgg8b", (1, 2, 4), (AuxSpec("pool_linear"), AuxSpec("conv", min_channels=32),
                                         AuxSpec("linear")), (BlockOptim(lr=0.05),) * 4, 0.25)


@pytest.fixture
def winner(tmp_path: Path) -> Path:
    path = tmp_path / "winner.json"
    path.write_text(json.dumps(to_document(SOURCE, constraints=Limits(2.0, 0.6).section())))
    return path


def warm_started(db: str, study: str = "t") -> list[tuple[int, str, Decoupling]]:
    out = []
    for t in optuna.load_study(study_name=study, storage=db).get_trials():
        rec = TrialRecord.of(t)
        if rec.warm_start:
            d = rec.decoupling()
            assert d is not None
            out.append((t.number, rec.warm_start, d))
    return out


def test_the_first_trials_are_the_transferred_winner_and_its_neighbours(
        cli: Runner, db: str, winner: Path) -> None:
    run = ["-q", "run", "--storage", db, "--study", "t", "--backbone", "vgg11",
           "--min-speedup", "1.8", "--warm-start", str(winner), *SMALL]
    rc, out, err = cli(*run, "--n-trials", "7")
    assert rc == 0, err
    starts = warm_started(db)
    assert [n for n, _, _ in starts] == list(range(len(starts)))
    assert 3 <= len(starts) <= 1 + NEIGHBOURS
    assert starts[0][1] == "transferred"
    space = SearchSpace(backbones=("vgg11",))
    want = carry(SOURCE, Limits(1.8, None, "flops"), "vgg11", 0.25,
                 shape={"in_channels": 3, "image_size": (16, 16), "num_classes": 10},
                 ks=range(space.min_blocks, space.max_blocks + 1), min_units=space.min_units)
    t = starts[0][2]
    assert t == want.decoupling
    for i, (_, mark, d) in enumerate(starts[1:], 1):
        assert mark.startswith(f"neighbour {i}: ")
        cuts_moved = [abs(a - b) for a, b in zip(d.cuts, t.cuts) if a != b]
        heads_changed = [i for i, (a, b) in enumerate(zip(d.aux, t.aux)) if a.family != b.family]
        one_cut = len(d.cuts) == len(t.cuts) and cuts_moved == [1] and not heads_changed
        one_head = d.cuts == t.cuts and len(heads_changed) == 1
        tied = d.cuts == t.cuts and len({a.family for a in d.aux}) == 1 and heads_changed
        removed = len(d.cuts) == len(t.cuts) - 1 and set(d.cuts) < set(t.cuts)
        assert one_cut or one_head or tied or removed, (mark, d.cuts, t.cuts)
        assert not removed or "removed" in mark
        assert not tied or mark.endswith(f"every head {d.aux[0].family}")
    study = optuna.load_study(study_name="t", storage=db)
    for n, _, _ in starts:  # each meets the study's constraint, as trained
        rec = TrialRecord.of(study.trials[n])
        assert rec.speedup is not None and rec.speedup >= 1.8 and not rec.rejected
        assert not rec.drawn_cuts  # trained where it was queued, not moved
    assert "against the transferred decoupling" in out
    frame = trials_frame(study)  # the report's table and CSV say which trials were starts
    assert list(frame["warm_start"][:len(starts)]) == [m for _, m, _ in starts]
    assert markdown(study.trials[0]).startswith("### Trial 0 (transferred)")

    rc, out, err = cli(*run, "--n-trials", "9")  # a rerun: nothing queued twice
    assert rc == 0, err
    assert [m for _, m, _ in warm_started(db)] == [m for _, m, _ in starts]


# The shape of the vgg8b Quality winner: its heads fit no placement on another vgg8b width
# at >= 2x and <= 0.6 (by FLOPs it is 1.95x at its own width, and stays there at others).
HEAVY = Decoupling("vgg8b", (1, 2, 3), (
    AuxSpec("linear"), AuxSpec("mlp_sr", depth=2, width=2.0, min_channels=32),
    AuxSpec("downstream", depth=1, width=0.5, loss="predsim", min_channels=32)),
    (BlockOptim(lr=0.05),) * 4, 0.25)


def test_a_winner_whose_heads_fit_nowhere_starts_with_one_head_family_on_every_block(
        cli: Runner, db: str, tmp_path: Path) -> None:
    path = tmp_path / "heavy.json"
    path.write_text(json.dumps(to_document(HEAVY, constraints=Limits(2.0, 0.6).section())))
    shape = {"in_channels": 3, "image_size": (16, 16), "num_classes": 10}
    limits = Limits(2.0, 0.6, "flops")
    with pytest.raises(UserError, match="no placement"):  # the transfer itself refuses
        carry(HEAVY, limits, "vgg8b", 0.125, shape=shape, ks=range(2, 7))

    def run(study: str, max_blocks: str) -> list[str]:
        return ["run", "--storage", db, "--study", study, "--backbone", "vgg8b", "--width",
                "0.125", "--min-speedup", "2", "--max-memory", "0.6", "--max-blocks", max_blocks,
                "--warm-start", str(path), *SMALL, "--n-trials", "3", "--confirm-top", "0"]

    rc, out, err = cli(*run("h", "6"))
    assert rc == 0, err
    starts = warm_started(db, "h")
    (_, mark, t), (_, second, other) = starts[0], starts[1]
    family = mark.removeprefix("transferred: every head ")
    assert family != mark and {a.family for a in t.aux} == {family}
    # it is the source's structure with that family, placed as the transfer places it
    tied = replace(HEAVY, aux=tuple(AuxSpec(family, loss=a.loss) for a in HEAVY.aux))
    want = carry(tied, limits, "vgg8b", 0.125, shape=shape, ks=range(2, 7))
    assert t.cuts == want.decoupling.cuts and [a.loss for a in t.aux] == [
        a.loss for a in want.decoupling.aux]
    # then another family, placed on its own
    assert second.startswith("neighbour 1: every head ") and second.endswith(", placed anew")
    assert len({a.family for a in other.aux}) == 1 and other.aux[0].family != family
    study = optuna.load_study(study_name="h", storage=db)
    for n, _, _ in starts:  # each meets the study's constraints, as trained
        rec = TrialRecord.of(study.trials[n])
        assert rec.speedup is not None and rec.speedup >= 2 and rec.memory_ratio is not None
        assert rec.memory_ratio <= 0.6 and not rec.rejected
    assert f"against the transferred decoupling, every head {family}" in out

    # where no family fits either (at most 3 blocks), the warm start is refused with the
    # transfer's own line
    rc, _, err = cli(*run("h3", "3"))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no placement" in err, err


def test_the_former_flag_still_works_and_says_its_new_name_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["run", "--seed-from", "a.json", "--seed-from", "b.json", "--seed", "3"])
    err = capsys.readouterr().err
    assert args.warm_start == Path("b.json") and args.seed == 3  # the last given, as argparse
    assert err.splitlines() == [
        "bwbpf-search run: --seed-from is now --warm-start (the old name still works)"]
    assert parse(["run", "--warm-start", "a.json"]).warm_start == Path("a.json")
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        parse(["run", "--help"])
    shown = capsys.readouterr().out
    assert "--warm-start FILE" in shown and "--seed-from" not in shown  # the old name unlisted


def test_a_bad_warm_start_file_is_refused_before_the_study_is_touched(cli: Runner, db: str,
                                                                      tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "t", "--warm-start", str(missing),
                     *SMALL, "--n-trials", "1")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--warm-start" in err
    other = tmp_path / "resnet.json"
    other.write_text(json.dumps(to_document(Decoupling.paper_default("resnet18"))))
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "t", "--warm-start", str(other),
                     *SMALL, "--n-trials", "1")
    assert rc == 2 and "same family only" in err and len(err.strip().splitlines()) == 1
    assert optuna.get_all_study_names(db) == []


def test_warm_starts_train_in_full_where_the_pruner_stops_others(cli: Runner, db: str,
                                                          winner: Path) -> None:
    base = ["-q", "run", "--storage", db, "--study", "p", "--backbone", "vgg11", *SMALL,
            "--epochs", "2", "--pruner", "median", "--pruner-startup", "0", "--min-epochs", "1"]
    rc, _, err = cli(*base, "--n-trials", "1")
    assert rc == 0, err
    # finished trials no other can match at epoch 1, more of them than the trials to come: the
    # median stays 1.0, so the median pruner stops every later trial there, unless a warm start
    study = optuna.load_study(study_name="p", storage=db)
    for _ in range(20):
        study.add_trial(optuna.trial.create_trial(value=1.0,
                                                  intermediate_values={1: 1.0, 2: 1.0}))
    rc, _, err = cli(*base, "--n-trials", "28", "--warm-start", str(winner))
    assert rc == 0, err
    trials = optuna.load_study(study_name="p", storage=db).get_trials()
    starts = [t for t in trials if TrialRecord.of(t).warm_start]
    others = [t for t in trials[21:] if not TrialRecord.of(t).warm_start]
    assert starts and all(t.state == optuna.trial.TrialState.COMPLETE for t in starts)
    assert all(len(TrialRecord.of(t).curve) == 2 for t in starts)
    assert others and all(t.state == optuna.trial.TrialState.PRUNED for t in others)
