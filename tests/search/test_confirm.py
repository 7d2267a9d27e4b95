"""Confirmed winners: the best trials, the references and BP re-trained over more seeds; the
mean over seeds ranks trials for export, the summary and the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import optuna_dashboard
import pytest
from optuna.trial import TrialState

from bwbpf.reports import optuna_api, plots, trials_frame
from bwbpf.reports.record import TrialRecord, ranked
from bwbpf.reports.seed_record import Confirmation
from bwbpf.reports.stored_run import SETTINGS
from bwbpf.reports.study_attrs import CONFIRMED, bp_confirmation, confirmations, save_confirmation
from bwbpf.search.run.confirm import candidates, top_trials, train
from bwbpf.search.run.runner import load_search_data
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.study.stored_settings import conflicts
from bwbpf.spaces import SearchSpace, sample, to_document

from .conftest import FAST, FAST_SUBSET, Runner

SPACE = SearchSpace()
INPUT = {"channels": 3, "size": [16, 16], "classes": 10, "dataset": "synthetic"}
# trial -> (single-seed accuracy, speed-up, the accuracy of two more seeds or None)
PLAN = {0: (0.70, 1.5, (0.60, 0.62)),  # the lucky single seed
        1: (0.66, 1.5, (0.68, 0.67)),  # the confirmed best
        2: (0.65, 2.0, None),
        3: (0.68, 1.0, None)}


def hand_built(db: str, name: str, objectives: list[str]) -> optuna.Study:
    """A study with PLAN's trials and confirmations, written through the record's contract."""
    study = optuna.create_study(storage=db, study_name=name,
                                directions=["maximize"] * len(objectives),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr(SETTINGS, {"objectives": objectives})
    for number, (acc, speedup, more) in PLAN.items():
        trial = study.ask()
        doc = to_document(sample(trial, SPACE), input=INPUT, metrics={},
                          provenance={"study": name, "trial": number})
        for k, v in TrialRecord(document=doc, curve=(acc,), speedup=speedup).attrs().items():
            trial.set_user_attr(k, v)
        study.tell(trial, [acc, speedup][:len(objectives)])
        if more:
            save_confirmation(study, Confirmation(number, (0, 1, 2), (acc, *more)))
    return study


def exported(cli: Runner, db: str, study: str, tmp_path: Path, *flags: str) -> list[int]:
    out = tmp_path / f"{study}{len(flags)}"
    rc, stdout, err = cli("export", "--storage", db, "--study", study, *flags, "-o",
                          str(out if flags else out.with_suffix(".json")))
    assert rc == 0, err
    files = [Path(line) for line in stdout.splitlines()]
    return [json.loads(f.read_text())["provenance"]["trial"] for f in files]


def test_export_ranks_by_the_confirmed_mean(cli: Runner, db: str, tmp_path: Path) -> None:
    so = hand_built(db, "so", ["accuracy"])
    assert so.best_trial.number == 0  # Optuna's pick: the single seed
    assert [t.number for t in ranked(so)] == [1, 0, 3, 2]
    assert exported(cli, db, "so", tmp_path) == [1]
    assert exported(cli, db, "so", tmp_path, "--top", "3") == [1, 0, 3]

    # accuracy and speed-up: single seeds, 0 dominates 1 and 3; confirmed, 1 dominates 0
    mo = hand_built(db, "mo", ["accuracy", "speedup"])
    assert {t.number for t in mo.best_trials} == {0, 2}
    assert sorted(exported(cli, db, "mo", tmp_path, "--pareto")) == [1, 2, 3]
    # one rule: the report's figure and the CSV's on_front mark what export --pareto wrote
    f = plots.front_figure(mo)
    assert f is not None and {n for n, on in zip(f.numbers, f.on_front) if on} == {1, 2, 3}
    frame = trials_frame(mo)
    assert set(frame.loc[frame["on_front"], "number"]) == {1, 2, 3}
    # a single-objective study's front is on accuracy and speed-up too (3: the most
    # accurate, 2: the fastest, 1: between; 0's confirmed mean is below 1's at 1's speed-up)
    assert sorted(exported(cli, db, "so", tmp_path, "--pareto")) == [1, 2, 3]
    # what is confirmed: the single-seed front, most accurate first (the same on a rerun)
    s = SearchSettings(study="mo", storage=db, objectives=("accuracy", "speedup"))
    assert [t.number for t in top_trials(mo, s)] == [0, 2]
    assert [t.number for t in top_trials(so, replace(s, objectives=("accuracy",)))] == [0, 3, 1]

    rc, out, err = cli("report", "--storage", db, "--study", "so", "-o",
                       str(tmp_path / "r.html"), "--csv", str(tmp_path / "t.csv"))
    assert rc == 0, err
    html = (tmp_path / "r.html").read_text()
    assert "0.6700 ± 0.0100" in html and "single seed" in html
    csv = (tmp_path / "t.csv").read_text().splitlines()
    head = csv[0].split(",")
    row1 = dict(zip(head, csv[2].split(",")))
    assert float(row1["confirmed_mean"]) == pytest.approx(0.67)
    assert float(row1["confirmed_std"]) == pytest.approx(0.01)
    assert row1["confirmed_seeds"] == "3" and row1["value_accuracy"] == "0.66"
    assert dict(zip(head, csv[3].split(",")))["confirmed_seeds"] == ""


def test_confirmation_statistics_and_what_counts() -> None:
    c = Confirmation(4, (0, 1, 2), (0.5, 0.6, 0.7))
    assert c.mean == pytest.approx(0.6) and c.std == pytest.approx(0.1)  # sample std (n - 1)
    assert c.shown() == "0.6000 ± 0.1000 over 3 seeds"
    assert Confirmation.parse(4, c.stored()) == c
    # one seed is the search's own result: nothing confirmed; malformed entries are skipped
    for raw in ({"seeds": [0], "val_accuracy": [0.5]}, {"seeds": [0, 1]}, [0.5, 0.6],
                {"seeds": [0, 1], "val_accuracy": [0.5]}):
        assert Confirmation.parse(4, raw) is None


def run(cli: Runner, db: str, *extra: str) -> tuple[str, str]:
    rc, out, err = cli("run", "--storage", db, "--study", "c", "--n-trials", "3",
                       "--pruner", "none", *FAST, "--epochs", "1", "--confirm-top", "2",
                       "--confirm-seeds", "1", *extra)
    assert rc == 0, err
    return out, err


def trainings(err: str) -> list[str]:
    """The confirmation trainings a run reports, one line each ("confirm trial 2 seed 1")."""
    return [line.split(":")[0] for line in err.splitlines() if line.startswith("confirm ")]


def test_run_confirms_the_top_trials_references_and_bp_and_resumes(cli: Runner, db: str
                                                                    ) -> None:
    out, err = run(cli, db)
    study = optuna.load_study(study_name="c", storage=db)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    top = sorted(done, key=lambda t: (-t.values[0], t.number))[:2]
    refs = [t for t in done if TrialRecord.of(t).baseline]
    assert {TrialRecord.of(t).baseline for t in refs} == {"paper", "uniform"}
    conf = confirmations(study)
    assert set(conf) == {t.number for t in top + refs}
    for t in top + refs:
        assert conf[t.number].seeds == (0, 1)
        assert conf[t.number].accuracy[0] == pytest.approx(t.values[0], abs=1e-5)
    bp = bp_confirmation(study, "vgg8b")
    assert bp is not None and bp.seeds == (0, 1)
    assert len(trainings(err)) == len(conf) + 1
    assert "trainings, " in err and "over 1 more seed" in err
    assert "confirmed over 2 seeds: " in out and " over 2 seeds (single seed " in out
    best = ranked(study)[0]
    assert f"best     trial {best.number}: val {conf[best.number].shown()}" in out

    # every trial has its dashboard note; a confirmed one shows the confirmation
    handle = optuna.load_study(study_name="c", storage=db,
                               sampler=optuna.samplers.RandomSampler())
    for t in study.get_trials():
        note = optuna_dashboard.get_note(optuna.trial.Trial(handle, optuna_api.trial_id(t)))
        assert f"### Trial {t.number}" in note and "| block | units |" in note
        assert ("val accuracy, confirmed" in note) == (t.number in conf)

    # a rerun trains nothing; with one seed's result gone, exactly that one
    _, err = run(cli, db)
    assert trainings(err) == []
    gone = top[0].number
    study.set_user_attr(f"{CONFIRMED}{gone}", {"seeds": [0], "val_accuracy": [0.1]})
    _, err = run(cli, db)
    label = f"trial {gone}" if TrialRecord.of(top[0]).baseline is None else \
        f"{TrialRecord.of(top[0]).baseline} (trial {gone})"
    assert trainings(err) == [f"confirm {label} seed 1"]
    assert confirmations(optuna.load_study(study_name="c", storage=db))[gone] == conf[gone]


def test_confirmation_trains_what_the_trial_trained(cli: Runner, db: str) -> None:
    """At the study's own seed a confirmation training gives the trial's accuracy (CPU):
    the same net, plan and validation split."""
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "same", "--n-trials", "1",
                     "--no-baselines", "--pruner", "none", *FAST, "--epochs", "1")
    assert rc == 0, err
    study = optuna.load_study(study_name="same", storage=db)
    s = SearchSettings(study="same", storage=db, dataset="synthetic", epochs=1, batch_size=64,
                       device="cpu", n_trials=1, confirm_top=1, train_subset=FAST_SUBSET)
    (c,) = candidates(study, s, top_trials(study, s))
    assert train(c, load_search_data(s), s.seed) == pytest.approx(c.own, abs=1e-5)


BAD = [(["--confirm-top", "-1"], "argument --confirm-top: -1 must be >= 0"),
       (["--confirm-top", "two"], "argument --confirm-top: 'two' is not an integer"),
       (["--confirm-seeds", "0"], "argument --confirm-seeds: 0 must be >= 1")]


@pytest.mark.parametrize(("flags", "message"), BAD, ids=[b[1][10:32] for b in BAD])
def test_bad_confirmation_flags(cli: Runner, tmp_path: Path, flags: list[str], message: str
                                ) -> None:
    db = tmp_path / "study.db"
    rc, _, err = cli("run", "--storage", f"sqlite:///{db}", *FAST, *flags)
    assert rc == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not db.exists()


def test_a_rerun_may_ask_for_more_confirmation() -> None:
    s = SearchSettings(study="s", storage="sqlite:///x.db")
    more = SearchSettings(study="s", storage="sqlite:///x.db", confirm_top=5, confirm_seeds=4)
    assert conflicts(more, s.record()) == []
    with pytest.raises(Exception, match="--confirm-seeds: 0 must be >= 1"):
        SearchSettings(study="s", storage="sqlite:///x.db", confirm_seeds=0)
