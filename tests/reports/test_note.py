"""A trial's note in optuna-dashboard: the decoupling as a table, written on a finished trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import optuna_dashboard
from optuna.trial import TrialState

from bwbpf.reports import optuna_api
from bwbpf.reports.note import markdown, save_note
from bwbpf.reports.record import TrialRecord
from bwbpf.reports.seed_record import Confirmation
from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, SearchSpace, params_for, sample
from bwbpf.spaces import to_document as document

SPACE = SearchSpace()  # up to 4 blocks: cut_1..3, aux_0..2, lr_mult_0..3
K2 = Decoupling("vgg8b", (3,), (AuxSpec("conv", 2, 0.5, "predsim", 32),),
                (BlockOptim(lr=0.05), BlockOptim(lr=0.1)), 0.25)
INPUT = {"channels": 3, "size": [16, 16], "classes": 10, "dataset": "synthetic"}


def k2_trial(study: optuna.Study, state: TrialState, *, measured: bool = True
             ) -> optuna.trial.FrozenTrial:
    study.enqueue_trial(params_for(K2, SPACE))
    trial = study.ask()
    d = sample(trial, SPACE)
    rec = TrialRecord(document=document(d, input=INPUT, metrics={}, provenance={}),
                      curve=(0.61, 0.7), speedup=1.8, speedup_flops=1.6 if measured else 1.8,
                      block_seconds=(0.2, 0.1) if measured else (),
                      memory_ratio=0.55,
                      pruned_at=2 if state == TrialState.PRUNED else None)
    for k, v in rec.attrs().items():
        trial.set_user_attr(k, v)
    study.tell(trial, 0.7 if state == TrialState.COMPLETE else None, state=state)
    return study.get_trials()[-1]


def test_note_of_a_k2_trial_on_a_finished_trial(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=db, study_name="n", direction="maximize")
    done = k2_trial(study, TrialState.COMPLETE)
    pruned = k2_trial(study, TrialState.PRUNED)
    save_note(study, done)
    save_note(study, pruned)
    c = Confirmation(done.number, (0, 1, 2), (0.7, 0.68, 0.66))
    save_note(study, done, c)  # again, after its confirmation: it replaces the first

    handle = optuna.load_study(study_name="n", storage=db)
    note = optuna_dashboard.get_note(optuna.trial.Trial(handle, optuna_api.trial_id(done)))
    assert note == markdown(done, c)
    assert note.startswith(f"### Trial {done.number}: complete\n")
    assert "| block | units | head | local loss | lr |" in note
    assert "| 1 | 0-2 | conv, depth 2, width 0.5 | predsim | 0.05 |" in note
    assert "| 2 | 3-5 | the net's classifier | cross-entropy | 0.1 |" in note
    assert "| speed-up over BP | 1.80x from measured step times, 1.60x from FLOPs |" in note
    assert "| activation memory / BP's | 0.55 |" in note
    assert "| val accuracy, single seed | 0.7000 (epoch 2) |" in note
    assert "| val accuracy, confirmed | 0.6800 ± 0.0200 over 3 seeds (seeds 0, 1, 2) |" in note
    assert note.endswith("Unused parameters (K=2): cut_2, cut_3, aux_1_head, aux_1_depth, "
                         "aux_1_width, aux_1_loss, aux_2_head, aux_2_depth, aux_2_width, "
                         "aux_2_loss, lr_mult_2, lr_mult_3\n")
    other = optuna_dashboard.get_note(optuna.trial.Trial(handle, optuna_api.trial_id(pruned)))
    assert other.startswith(f"### Trial {pruned.number}: pruned at epoch 2\n")
    assert "confirmed" not in other


def test_note_without_measured_times_or_a_decoupling(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    flops = markdown(k2_trial(study, TrialState.COMPLETE, measured=False))
    assert "| speed-up over BP | 1.80x from FLOPs |" in flops and "measured" not in flops
    trial = study.ask()
    study.tell(trial, 0.5)
    assert markdown(study.get_trials()[-1]) == ("### Trial 1: complete\n\n"
                                                "No decoupling recorded.\n")
