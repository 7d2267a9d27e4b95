"""`bwbpf-search export`: winning trials -> validated, versioned JSON files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bwbpf.search.objective import DOCUMENT
from bwbpf.spaces import UserError, from_document
from bwbpf.spaces.document import as_document
from bwbpf.spaces.files import write_json_atomic


def choose(study: optuna.Study, *, trial: int | None, pareto: bool, top: int | None
           ) -> list[FrozenTrial]:
    """The trials to export: one number, the Pareto set, the top K by accuracy, or the best."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise UserError(f"study {study.study_name!r} has no finished trial to export yet")
    if trial is not None:
        match = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not match:
            raise UserError(f"--trial {trial}: no such trial in study {study.study_name!r}")
        if match[0].state != TrialState.COMPLETE:
            raise UserError(f"--trial {trial} is {match[0].state.name.lower()}; only complete "
                            "trials export")
        return match
    if pareto:
        return sorted(study.best_trials, key=lambda t: -t.values[0])
    ranked = sorted(done, key=lambda t: (-t.values[0], t.number))
    return ranked[:top] if top else ranked[:1]


def document(t: FrozenTrial) -> dict[str, Any]:
    doc = as_document(t.user_attrs.get(DOCUMENT))
    if doc is None:
        raise UserError(f"trial {t.number} carries no decoupling document (not made by "
                        "bwbpf-search run?)")
    from_document(doc)  # what is exported must load
    return doc


def export(study: optuna.Study, out: Path, *, trial: int | None = None, pareto: bool = False,
           top: int | None = None, force: bool = False) -> list[Path]:
    trials = choose(study, trial=trial, pareto=pareto, top=top)
    docs = [(t, document(t)) for t in trials]
    many = pareto or top is not None
    if many or out.is_dir():
        if out.exists() and not out.is_dir():
            raise UserError(f"-o {out}: a file; give a folder for --pareto/--top")
        targets = [out / f"{study.study_name}-trial{t.number}.json" for t, _ in docs]
    else:
        if not out.parent.is_dir():
            raise UserError(f"-o {out}: folder {out.parent} does not exist")
        targets = [out]
    clash = [p for p in targets if p.exists()]
    if clash and not force:
        raise UserError(f"-o {clash[0]} exists; pass --force to overwrite")
    for path, (_, doc) in zip(targets, docs):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"-o {path.parent}: cannot create it ({e.strerror or e})") from None
        write_json_atomic(path, doc)
    return targets
