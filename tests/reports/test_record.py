"""The trial record: one contract for what `run` writes and what reports read."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import optuna
from optuna.trial import TrialState

from bwbpf.reports.record import (
    TrialRecord,
    best_trial,
    describe,
    save,
    state_counts,
)
from bwbpf.reports.standing import summary_rows, verdict
from bwbpf.reports.study_attrs import BP_BASELINE
from bwbpf.search.run.summary import summary as summary_lines
from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, to_document

# The attribute names are stored in users' studies: they must never change.
STORED_KEYS = {"decoupling", "baseline", "seeded", "block_flops", "block_params", "speedup",
               "speedup_flops", "block_seconds", "backprop_seconds", "compute_overhead",
               "memory_ratio", "peak_activation_mb", "backprop_activation_mb",
               "curve", "block_curve",
               "pruned_at", "fail_reason", "interrupted", "surplus", "rejected", "infeasible",
               "drawn_cuts", "lighter_heads", "train_seconds", "device", "peak_memory_mb"}


def full_record() -> TrialRecord:
    d = Decoupling.paper_default("vgg8b", width=0.25)
    return TrialRecord(document=to_document(d), baseline="paper", warm_start="neighbour 1: x",
                       block_flops=(1, 2, 3),
                       block_params=(4, 5, 6), speedup=2.0, speedup_flops=1.8,
                       block_seconds=(0.01, 0.02, 0.03), backprop_seconds=0.05,
                       compute_overhead=1.1,
                       memory_ratio=0.5, peak_activation_mb=1.5,
                       backprop_activation_mb=3.0, curve=(0.5, 0.6),
                       block_curve=((0.4, 0.5), (0.5, 0.6)), pruned_at=2, fail_reason="x",
                       interrupted=True, surplus=True, rejected="speed-up 1.00x < 2.00x",
                       infeasible="memory 0.70 of BP's > 0.50", drawn_cuts=(1, 4, 5),
                       lighter_heads=True, train_seconds=1.0, device="cpu",
                       peak_memory_mb=7.0)


def test_every_field_round_trips_through_a_stored_trial() -> None:
    rec = full_record()
    blank = TrialRecord()
    unset = [f.name for f in dataclasses.fields(rec) if getattr(rec, f.name) == getattr(
        blank, f.name)]
    assert unset == []  # every field is set here, so every stored key is checked below
    assert set(rec.attrs()) == STORED_KEYS
    study = optuna.create_study(storage="sqlite:///:memory:")
    study.add_trial(optuna.trial.create_trial(value=0.6, user_attrs=rec.attrs()))
    back = TrialRecord.of(study.get_trials()[0])
    assert back == rec
    assert isinstance(study.get_trials()[0].user_attrs["decoupling"], str)  # dashboard-whole
    d = back.decoupling()
    assert d is not None and d.num_blocks == 4


def test_save_writes_only_what_changed() -> None:
    study = optuna.create_study()
    trial = study.ask()
    rec = save(trial, TrialRecord(), TrialRecord(curve=(0.1,)))
    assert trial.user_attrs == {"curve": [0.1]}
    trial.set_user_attr("curve", "sentinel")  # a field save must not rewrite
    save(trial, rec, replace(rec, pruned_at=1))
    assert trial.user_attrs == {"curve": "sentinel", "pruned_at": 1}


def test_a_broken_document_reads_as_no_decoupling() -> None:
    rec = TrialRecord.of(optuna.trial.create_trial(value=1.0, user_attrs={"decoupling": "{"}))
    assert rec.document is None and rec.decoupling() is None


def test_best_trial_prefers_the_earlier_of_a_tie_and_skips_unfinished() -> None:
    study = optuna.create_study(direction="maximize")
    for v in (0.5, 0.7, 0.7):
        study.add_trial(optuna.trial.create_trial(value=v))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    best = best_trial(study)
    assert best is not None and best.number == 1
    assert state_counts(study) == {"complete": 3, "fail": 1}


def test_a_tie_with_bp_is_called_a_tie() -> None:
    assert verdict(0.00004) == "ties" and verdict(0.0001) == "beats"
    assert verdict(-0.0002) == "does not beat"
    study = optuna.create_study(direction="maximize")
    doc = to_document(Decoupling.uniform("vgg8b", k=2, width=0.25))
    study.add_trial(optuna.trial.create_trial(
        value=0.81234, user_attrs=TrialRecord(document=doc, curve=(0.81234,)).attrs()))
    study.set_user_attr(BP_BASELINE, {"vgg8b": {"val_accuracy": 0.81231, "best_lr": 0.05,
                                                "sweep": [{}]}})
    assert [r.label for r in summary_rows(study)] == ["best", "backprop"]
    line = next(x for x in summary_lines(study) if x.startswith("backprop"))
    assert "the search ties end-to-end BP" in line and "+0.0000" in line


def test_the_one_line_description_names_heads_depths_and_losses() -> None:
    d = Decoupling("vgg8b", (2, 3, 4), (AuxSpec("linear", loss="predsim"),
                                        AuxSpec("downstream", 2, 0.5, "infopro"),
                                        AuxSpec("conv", 1)), (BlockOptim(),) * 4, 0.25)
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=0.5,
        user_attrs=TrialRecord(document=to_document(d)).attrs())
    assert describe(trial) == ("vgg8b K=4 cuts (2, 3, 4) heads "
                               "linear+sim/downstream-d2+info/conv-d1")


def test_the_bp_baseline_entry_round_trips_and_keeps_what_it_does_not_know() -> None:
    from bwbpf.reports.seed_record import Confirmation
    from bwbpf.reports.study_attrs import (
        BPBaseline,
        bp_baselines,
        bp_confirmation,
        save_confirmation,
    )

    stored = {"backbone": "vgg8b", "width": 0.25, "epochs": 3, "weight_decay": 5e-4,
              "best_lr": 0.05, "val_accuracy": 0.8, "curve": [0.7, 0.8],
              "sweep": [{"lr": 0.05, "val_accuracy": 0.8, "curve": [0.7, 0.8],
                         "train_seconds": 1.5}], "a_later_key": {"x": 1}}
    old = {"best_lr": 0.1, "val_accuracy": 0.6}  # an older study's entry: the winner alone
    study = optuna.create_study()
    study.set_user_attr(BP_BASELINE, {"vgg8b": stored, "vgg11": old, "broken": {"lr": 1}})
    bps = bp_baselines(study)
    assert set(bps) == {"vgg8b", "vgg11"}  # an entry without its winner is left out
    assert bps["vgg8b"].stored() == stored and bps["vgg11"].stored() == old
    assert bps["vgg8b"].curve == (0.7, 0.8) and len(bps["vgg11"].sweep) == 0
    c = Confirmation(None, (0, 1), (0.8, 0.82))
    save_confirmation(study, c, backbone="vgg8b")
    assert bp_confirmation(study, "vgg8b") == c
    after = study.user_attrs[BP_BASELINE]
    assert after["vgg8b"] == {**stored, "confirmed": c.stored()}
    assert after["vgg11"] == old and after["broken"] == {"lr": 1}  # untouched
    bp = BPBaseline.parse(after["vgg8b"])
    assert bp is not None and BPBaseline.parse(bp.stored()) == bp  # a round trip
