"""Studies for the report tests, built by hand from trial records (no training).

The parameters come from the real search space (``spaces.sample`` on an asked trial), the user
attributes from ``TrialRecord``: the same contract `run` writes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bwbpf.reports.note import save_note
from bwbpf.reports.record import TrialRecord
from bwbpf.reports.stored_run import SETTINGS
from bwbpf.reports.study_attrs import BP_BASELINE
from bwbpf.search.cli import main
from bwbpf.spaces import SearchSpace, params_for, reference_decouplings, sample, to_document

SPACE = SearchSpace()  # vgg8b at 0.25 width
INPUT = {"channels": 3, "size": [16, 16], "classes": 10, "dataset": "synthetic"}
BP = {"vgg8b": {"backbone": "vgg8b", "width": 0.25, "epochs": 2, "best_lr": 0.05,
                "val_accuracy": 0.61, "curve": [0.5, 0.61],
                "sweep": [{"lr": 0.05, "val_accuracy": 0.61, "curve": [0.5, 0.61]}]}}


@dataclass(frozen=True)
class Plan:
    """One hand-made trial: its curve, and how it ended."""

    curve: tuple[float, ...]
    pruned: bool = False
    baseline: str | None = None
    speedup: float = 1.5


PLANS = [Plan((0.42, 0.55), baseline="paper", speedup=2.07),
         Plan((0.38, 0.50), baseline="uniform", speedup=2.5),
         Plan((0.45, 0.63), speedup=1.2), Plan((0.18,), pruned=True, speedup=3.0),
         Plan((0.40, 0.58), speedup=1.8), Plan((0.21,), pruned=True, speedup=2.9),
         Plan((0.47, 0.66), speedup=1.3),
         Plan((0.35, 0.52), speedup=2.2)]


def add_trial(study: optuna.Study, plan: Plan, objectives: list[str]) -> None:
    if plan.baseline:
        d = reference_decouplings(SPACE)[plan.baseline]
        study.enqueue_trial(params_for(d, SPACE),
                            user_attrs=TrialRecord(baseline=plan.baseline).attrs())
    trial = study.ask()
    d = sample(trial, SPACE)
    blocks = tuple(tuple(round(a - 0.05 * (d.num_blocks - 1 - k), 5) for k in range(d.num_blocks))
                   for a in plan.curve)
    provenance = {"study": study.study_name, "trial": trial.number}
    doc = to_document(d, input=INPUT, metrics={"speedup": plan.speedup},
                      provenance=provenance)
    rec = TrialRecord(document=doc, baseline=plan.baseline, curve=plan.curve,
                      block_curve=blocks, speedup=plan.speedup,
                      peak_activation_mb=10.0 / d.num_blocks,
                      pruned_at=len(plan.curve) if plan.pruned else None)
    for key, value in rec.attrs().items():
        trial.set_user_attr(key, value)
    if len(objectives) == 1:
        for epoch, acc in enumerate(plan.curve, start=1):
            trial.report(acc, epoch)
    if plan.pruned:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        values = {"accuracy": plan.curve[-1], "speedup": plan.speedup}
        study.tell(trial, [values[o] for o in objectives])
    save_note(study, study.get_trials()[-1])  # as `run` does when a trial ends


def make_study(url: str, name: str, objectives: list[str]) -> None:
    directions = ["maximize"] * len(objectives)
    study = optuna.create_study(storage=url, study_name=name, directions=directions,
                                sampler=optuna.samplers.RandomSampler(seed=1))
    study.set_user_attr(SETTINGS, {"objectives": objectives, "dataset": "synthetic",
                                   "epochs": 2})
    study.set_user_attr(BP_BASELINE, BP)
    for plan in PLANS:
        add_trial(study, plan, objectives)


@pytest.fixture(scope="session")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file with a single- and a multi-objective study, both with pruned trials."""
    url = f"sqlite:///{tmp_path_factory.mktemp('reports') / 'study.db'}"
    make_study(url, "so", ["accuracy"])
    make_study(url, "mo", ["accuracy", "speedup"])
    return url


@pytest.fixture(scope="session")
def so(db: str) -> optuna.Study:
    return optuna.load_study(study_name="so", storage=db)


@pytest.fixture(scope="session")
def mo(db: str) -> optuna.Study:
    return optuna.load_study(study_name="mo", storage=db)


@pytest.fixture(scope="session")
def report_file(db: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", "--storage", db, "--study", "so", "-o", str(out)]) == 0
    return out
