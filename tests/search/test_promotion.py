"""Promotion to a higher fidelity before confirmation (--promote-top/-epochs/-subset)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from bwbpf.reports.record import best_trial, ranked
from bwbpf.reports.seed_record import Confirmation
from bwbpf.reports.study_attrs import (
    PROMOTED,
    bp_confirmation,
    confirmations,
    promoted,
    save_confirmation,
)

from .conftest import FAST, Runner

BASE = [*FAST, "--epochs", "1", "--train-subset", "120", "--val-size", "64", "--pruner", "none",
        "--references", "paper", "--bp-lrs", "0.05"]
FID = (2, 200)
PROMOTE = ["--promote-epochs", str(FID[0]), "--promote-subset", str(FID[1])]


def load(db: str) -> optuna.Study:
    return optuna.load_study(study_name="p", storage=db)


def promoted_keys(study: optuna.Study) -> set[str]:
    return {k for k in study.user_attrs if k.startswith(PROMOTED)}


def test_without_promotion_nothing_is_promoted(cli: Runner, db: str) -> None:
    rc, out, err = cli("-q", "run", "--storage", db, "--study", "p", "--n-trials", "3", *BASE,
                       "--confirm-top", "1", "--confirm-seeds", "1")
    assert rc == 0, err
    study = load(db)
    assert not promoted_keys(study)
    assert all(c.fidelity is None for c in confirmations(study).values())
    # every comparison names the trial budget, and the summary says once what that is worth
    compared = [x for x in out.splitlines() if "(best " in x or "by +" in x or "by -" in x]
    assert compared and all("at 1 epoch on 120 images, the trial budget" in x
                            for x in compared)
    assert out.count("close rankings there often reverse with longer training") == 1
    assert "--promote-top N" in out


def test_a_promotion_to_more_images_at_the_same_epochs_runs(cli: Runner, db: str) -> None:
    """EcoNAS's lever: more data per trial, not more epochs (the search's 1 epoch kept)."""
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "p", "--n-trials", "2", *BASE,
                     "--promote-top", "1", "--promote-epochs", "1", "--promote-subset", "200",
                     "--confirm-top", "0")
    assert rc == 0, err
    there = promoted(load(db), (1, 200))
    assert {"0", "bp:vgg8b"} <= set(there)  # the reference (trial 0) and BP, at least


def test_promoted_trials_rank_by_their_promoted_score_and_confirm_there(
        cli: Runner, db: str, tmp_path: Path) -> None:
    argv = ["run", "--storage", db, "--study", "p", "--n-trials", "4", *BASE,
            "--promote-top", "2", *PROMOTE, "--confirm-top", "1", "--confirm-seeds", "1"]
    rc, out, err = cli(*argv)
    assert rc == 0, err
    study = load(db)
    there = promoted(study, FID)
    # the 2 best by single seed, the reference and BP, each from the study's seed
    top2 = sorted((t for t in study.trials if t.values),
                  key=lambda t: (-t.values[0], t.number))[:2]
    refs = [t for t in study.trials if t.user_attrs.get("baseline")]
    assert {str(t.number) for t in top2 + refs} | {"bp:vgg8b"} == set(there)
    assert all(c.seeds[0] == 0 for c in there.values())
    # the ranking: promoted trials first, by their record at that fidelity
    order = ranked(study)
    promoted_trials = [t for t in order if str(t.number) in there]
    assert order[:len(promoted_trials)] == promoted_trials
    means = [there[str(t.number)].mean for t in promoted_trials]
    assert means == sorted(means, reverse=True)
    best = best_trial(study)
    assert best is not None and best.number == promoted_trials[0].number
    # confirmation ran at that fidelity: the best promoted trial, the reference and BP
    assert len(there[str(best.number)].seeds) == 2
    assert all(len(there[str(t.number)].seeds) == 2 for t in refs)
    bp = bp_confirmation(study, "vgg8b")
    assert bp is not None and bp.fidelity == FID and len(bp.seeds) == 2
    assert f"at {FID[0]} epochs on {FID[1]} images" in out
    # every comparison names the fidelity it was made at; promoted, the study needs no note
    compared = [x for x in out.splitlines() if "(best " in x or "by +" in x or "by -" in x]
    assert compared and all(f"at {FID[0]} epochs on {FID[1]} images, promoted" in x
                            for x in compared)
    assert "often reverse" not in out
    # export takes the same winner
    rc, path, err = cli("export", "--storage", db, "--study", "p", "-o", str(tmp_path / "b.json"))
    assert rc == 0, err
    assert json.loads(Path(path.strip()).read_text())["provenance"]["trial"] == best.number

    # a rerun trains nothing; a larger --promote-top trains only the one missing
    before = {k: v for k, v in study.user_attrs.items() if k.startswith(PROMOTED)}
    rc, out, err = cli(*argv)
    assert rc == 0, err
    assert "promoting" not in out + err and "confirming" not in out + err
    assert "promoted to" in out  # the summary's line says at which fidelity
    assert {k: v for k, v in load(db).user_attrs.items() if k.startswith(PROMOTED)} == before
    rc, out, err = cli(*argv[:argv.index("--promote-top") + 1], "3",
                       *argv[argv.index("--promote-top") + 2:])
    assert rc == 0, err
    after = promoted_keys(load(db))
    assert len(after - set(before)) == 1
    assert "promoting 1 config" in out + err


@pytest.mark.parametrize(("flags", "message"), [
    (["--promote-top", "-1"], "argument --promote-top: -1 must be >= 0"),
    (["--promote-epochs", "0"], "argument --promote-epochs: 0 must be >= 1"),
    (["--promote-top", "1", "--epochs", "3", "--promote-epochs", "2"],
     "--promote-epochs 2 is fewer than --epochs 3"),
    (["--promote-top", "1", "--promote-subset", "100"],
     "--promote-subset 100 is fewer images than the search's 120"),
    (["--promote-top", "1", "--promote-epochs", "1", "--promote-subset", "120"],
     "give the search's own budget"),
    (["--promote-top", "1", "--promote-subset", "5000"],
     "--promote-subset 5000: train_subset 5000 not in 1..1136 for synthetic"),
], ids=["top", "epochs", "fewer-epochs", "fewer-images", "same", "more-than-the-data"])
def test_bad_promotion_flags_are_one_line(cli: Runner, db: str, tmp_path: Path,
                                          flags: list[str], message: str) -> None:
    rc, _, err = cli("run", "--storage", db, "--study", "p", *BASE, *flags)
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "study.db").exists()  # refused before the study is made


def test_confirmation_follows_the_top_as_it_moves(cli: Runner, db: str) -> None:
    """Two promoted trials stored with lucky single seeds (as an earlier process left them):
    confirming the first pulls its mean down and the second becomes the top; one run confirms
    it too, so the winner it leaves holds its seeds and a rerun has nothing to train."""
    argv = ["run", "--storage", db, "--study", "p", "--n-trials", "4", *BASE,
            "--promote-top", "2", *PROMOTE]
    rc, _, err = cli(*argv, "--promote-top", "0", "--confirm-top", "0")  # the search alone
    assert rc == 0, err
    study = load(db)
    top2 = sorted((t for t in study.trials if t.values and not t.user_attrs.get("baseline")),
                  key=lambda t: (-t.values[0], t.number))[:2]
    assert len(top2) == 2
    for t, lucky in zip(top2, (1.0, 0.999)):
        save_confirmation(study, Confirmation(t.number, (0,), (lucky,), FID))
    rc, out, err = cli(*argv, "--confirm-top", "1", "--confirm-seeds", "1")
    assert rc == 0, err
    there = promoted(load(db), FID)
    first, second = (there[str(t.number)] for t in top2)
    assert len(first.seeds) == 2 and first.accuracy[1] < 0.998  # the regression happened
    assert len(second.seeds) == 2  # ... and the new top was confirmed in the same run
    best = best_trial(load(db))
    assert best is not None and len(there[str(best.number)].seeds) == 2
    rc, out, err = cli(*argv, "--confirm-top", "1", "--confirm-seeds", "1")
    assert rc == 0, err
    assert "promoting" not in out + err and "confirming" not in out + err
