"""`bwbpf-search export`: winning trials -> validated, versioned JSON files."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from bwbpf.reports.pareto import front
from bwbpf.reports.record import TrialRecord, feasible_trials, ranked
from bwbpf.search.study.storage import redact
from bwbpf.search.study.stored_settings import StoredSettings
from bwbpf.search.winners.carry import carry_document
from bwbpf.spaces import UserError, from_document
from bwbpf.spaces.document import upgrade
from bwbpf.spaces.files import check_output, refuse_stdout, write_json_atomic
from bwbpf.spaces.limits import CostModel, Limits

MAX_STEM = 120  # bytes of a study name kept in a file name (file names end at 255 bytes)


def choose(study: optuna.Study, *, trial: int | None, pareto: bool, top: int | None
           ) -> list[FrozenTrial]:
    """The trials to export: one number, the Pareto set, the top K by accuracy, or the best.
    All but --trial choose among the trials that meet the study's constraints, and rank a
    confirmed trial by its mean over seeds (reports.record.ranked)."""
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
    feasible = feasible_trials(study)
    if not feasible:
        raise UserError(f"study {study.study_name!r}: none of its {len(done)} finished trials "
                        "meets its constraints; export one anyway with --trial N")
    if pareto:
        return front(study)
    best = ranked(study)  # confirmed trials by their mean over seeds first
    return best[:top] if top else best[:1]


def document(t: FrozenTrial, limits: Limits = Limits()) -> dict[str, Any]:
    """The trial's document, as the current version, with the study's constraints."""
    doc = TrialRecord.of(t).document
    if doc is None:
        raise UserError(f"trial {t.number} carries no decoupling document (not made by "
                        "bwbpf-search run?)")
    from_document(doc)  # what is exported must load
    doc = upgrade(doc)
    prov = doc.get("provenance")
    if isinstance(prov, dict) and "storage" in prov:  # a study stored by an older version
        doc = {**doc, "provenance": {**prov, "storage": redact(str(prov["storage"]))}}
    if limits.any:  # before the blocks, where a reader looks for what the file promises
        doc = {k: v for k, v in doc.items() if k != "constraints"}
        at = list(doc).index("blocks")
        items = list(doc.items())
        doc = dict([*items[:at], ("constraints", limits.section()), *items[at:]])
    return doc


def study_limits(study: optuna.Study) -> Limits:
    """The study's constraints and their cost model (a study stored before the cost model was
    a setting judged by FLOPs: its declared ``before``)."""
    stored = StoredSettings.of(study)
    space = stored.space()
    return Limits(space["min_speedup"], space["max_memory"],
                  cast(CostModel, stored.meant("cost_model")))


@dataclass(frozen=True)
class Target:
    """Where ``export --backbone/--width`` carries the documents (search.winners.carry)."""

    backbone: str | None = None
    width: float | None = None
    ignore_constraints: bool = False
    cost_model: CostModel | None = None

    @property
    def any(self) -> bool:
        return self.backbone is not None or self.width is not None

    def carry(self, doc: dict[str, Any], batch_size: int) -> dict[str, Any]:
        """The document on the target; its one line to stderr."""
        carried = carry_document(doc, self.backbone, self.width, cost_model=self.cost_model,
                                 batch_size=batch_size, ignore=self.ignore_constraints)
        print(carried.line(), file=sys.stderr, flush=True)
        return carried.document(doc)

    def suffix(self, doc: dict[str, Any]) -> str:
        b = doc["backbone"]
        return f"-{b['name']}x{b['width']:g}" if self.any else ""


def study_file_stem(study_name: str) -> str:
    """A flat, safe file name for a study: Optuna takes any name ('../x', '/abs/x'), but what
    is written must stay in the folder asked for. Every run of characters other than letters,
    digits, '.', '_' and '-' becomes '_', so does '..'; leading and trailing '._-' go."""
    stem = re.sub(r"\.{2,}", "_", re.sub(r"[^\w.-]+", "_", study_name))
    stem = re.sub(r"_{2,}", "_", stem).strip("._-")
    stem = stem.encode()[:MAX_STEM].decode(errors="ignore").strip("._-")
    return stem or "study"


def export(study: optuna.Study, out: Path, *, trial: int | None = None, pareto: bool = False,
           top: int | None = None, force: bool = False, to: Target = Target()) -> list[Path]:
    """Writes the chosen trials' documents: one file, or into the folder ``out`` as
    ``<study>-trial<N>.json`` (the study name made a flat, safe file name; carried to another
    backbone or width, ``-<backbone>x<width>`` is added)."""
    refuse_stdout(out, "-o")
    trials = choose(study, trial=trial, pareto=pareto, top=top)
    limits = study_limits(study)
    docs = [(t, document(t, limits)) for t in trials]
    if to.any:  # every transfer placed (or refused) before any file is written
        batch = StoredSettings.of(study).meant("batch_size")
        docs = [(t, to.carry(doc, batch)) for t, doc in docs]
    many = pareto or top is not None
    if many or out.is_dir():
        if out.exists() and not out.is_dir():
            raise UserError(f"-o {out}: a file; give a folder for --pareto/--top")
        stem = study_file_stem(study.study_name)
        targets = [out / f"{stem}-trial{t.number}{to.suffix(doc)}.json" for t, doc in docs]
    else:
        if not out.parent.is_dir():
            raise UserError(f"-o {out}: folder {out.parent} does not exist")
        targets = [out]
    for path in targets:  # all refused before any is written
        check_output(path, "-o", force=force)
    for path, (_, doc) in zip(targets, docs):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"-o {path.parent}: cannot create it ({e.strerror or e})") from None
        write_json_atomic(path, doc)
    return targets
