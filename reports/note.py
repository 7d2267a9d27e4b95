"""A trial's note in optuna-dashboard: its decoupling as a small markdown table.

The dashboard shows a markdown note beside every trial (``optuna_dashboard.save_note``) and
keeps it in the study's system attributes, not the trial's, so a finished trial's note can be
rewritten: once when the trial ends, again when it is confirmed over seeds.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from bwbpf.reports import optuna_api
from bwbpf.reports.record import TrialRecord
from bwbpf.reports.seed_record import Confirmation
from bwbpf.spaces import AuxSpec, unused_params
from bwbpf.spaces.heads import AUX_HEADS


def head(a: AuxSpec) -> str:
    """"conv, depth 2, width 0.5": the knobs the family has."""
    fam = AUX_HEADS.get(a.family)
    knobs = ([f"depth {a.depth}"] if fam.depths[0] != fam.depths[1] else []) + (
        [f"width {a.width:g}"] if fam.has_width else [])
    return ", ".join([a.family, *knobs])


def trial_outcome(t: FrozenTrial, rec: TrialRecord) -> str:
    if rec.rejected:
        return f"rejected by the constraints ({rec.rejected}), not trained"
    if t.state == TrialState.PRUNED:
        return f"pruned at epoch {rec.pruned_at}" if rec.pruned_at else "pruned"
    if t.state == TrialState.FAIL:
        return f"failed ({rec.fail_reason})" if rec.fail_reason else "failed"
    return t.state.name.lower()


def figure_rows(rec: TrialRecord, confirmation: Confirmation | None) -> list[tuple[str, str]]:
    """(what, value) rows: costs against end-to-end BP, then accuracy."""
    rows = []
    if rec.speedup is not None:
        if rec.block_seconds and rec.speedup_flops is not None:  # measured: FLOPs beside
            spd = f"{rec.speedup:.2f}x from measured step times, {rec.speedup_flops:.2f}x " \
                  "from FLOPs"
        else:
            spd = f"{rec.speedup:.2f}x from FLOPs"
        rows.append(("speed-up over BP", spd))
    if rec.memory_ratio is not None:
        rows.append(("activation memory / BP's", f"{rec.memory_ratio:.2f}"))
    if rec.infeasible:
        rows.append(("constraints", f"infeasible: {rec.infeasible}"))
    if rec.curve:
        rows.append(("val accuracy, single seed", f"{rec.curve[-1]:.4f} (epoch {len(rec.curve)})"))
    if confirmation is not None:
        seeds = ", ".join(map(str, confirmation.seeds))
        rows.append(("val accuracy, confirmed", f"{confirmation.shown()} (seeds {seeds})"))
    return rows


def markdown(t: FrozenTrial, confirmation: Confirmation | None = None) -> str:
    """The note: the outcome, one row per block, the figures, and the parameters Optuna drew that
    this decoupling ignores (a K=2 trial still carries every cut and head of the space)."""
    rec = TrialRecord.of(t)
    mark = rec.baseline or rec.warm_start
    tag = f" ({mark})" if mark else ""
    lines = [f"### Trial {t.number}{tag}: {trial_outcome(t, rec)}", ""]
    d = rec.decoupling()
    if d is None:
        return "\n".join(lines + ["No decoupling recorded."]) + "\n"
    lines += [f"{d.backbone} x{d.width:g}, K={d.num_blocks}, cuts {list(d.cuts)}", "",
              "| block | units | head | local loss | lr |", "|---|---|---|---|---|"]
    for i, ((lo, hi), opt) in enumerate(zip(d.block_ranges(), d.optim)):
        what, loss = (head(d.aux[i]), str(d.aux[i].loss)) if i < len(d.aux) else (
            "the net's classifier", "cross-entropy")
        units = f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}"
        lines.append(f"| {i + 1} | {units} | {what} | {loss} | {opt.lr:.3g} |")
    lines += ["", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in figure_rows(rec, confirmation)]
    unused = unused_params(t.params, d.num_blocks)
    if unused:
        lines += ["", f"Unused parameters (K={d.num_blocks}): {', '.join(unused)}"]
    return "\n".join(lines) + "\n"


def save_note(study: optuna.Study, t: FrozenTrial, confirmation: Confirmation | None = None
              ) -> None:
    """Writes ``t``'s note, replacing its last one."""
    import optuna_dashboard

    # optuna.Trial(study, id) tells the study's sampler that the trial begins: the search's
    # sampler would reseed itself for it (search.study.workers.TrialSeeded), and some write to the
    # trial (GridSampler), which a finished trial refuses. A handle whose sampler does not.
    handle = optuna.load_study(study_name=study.study_name,
                               storage=optuna_api.storage_of(study),
                               sampler=optuna.samplers.RandomSampler())
    optuna_dashboard.save_note(optuna.trial.Trial(handle, optuna_api.trial_id(t)),
                               markdown(t, confirmation))
