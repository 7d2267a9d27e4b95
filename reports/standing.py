"""Where the best trial stands: the rows the run's closing summary and the report's table
show (the best, the reference decouplings and end-to-end BP), and the fidelity every
comparison between them is made at.

A row's accuracy is its highest fidelity's: the mean at a promoted fidelity, else the mean
over seeds at the trial budget, else the single seed. Every comparison names that fidelity
(``compared_at``); a study without promotion says once that close rankings at the trial
budget often reverse with longer training, and how to check (``reversal_note``).
"""

from __future__ import annotations

from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from bwbpf.reports.record import TrialRecord, best_trial, describe
from bwbpf.reports.seed_record import Confirmation, Fidelity, fidelity_level, fidelity_shown
from bwbpf.reports.stored_run import StoredRun
from bwbpf.reports.study_attrs import bp_baselines, bp_confirmation, confirmations


class SummaryRow(NamedTuple):
    label: str  # "best", "paper", "uniform", "backprop"
    trial: int | None
    accuracy: float | None  # what ranks: the mean over seeds when confirmed, else ``single``
    speedup: float | None  # over end-to-end BP
    note: str
    single: float | None = None  # the single-seed validation accuracy (the last epoch's)
    confirmed: Confirmation | None = None
    speedup_flops: float | None = None  # the FLOPs figure, where ``speedup`` is measured
    memory: float | None = None  # peak saved activations / BP's

    def costs(self) -> str:
        """"speed-up 2.31x (FLOPs 2.07x), memory 0.55 of BP's", or "" when unknown."""
        if self.speedup is None:
            return ""
        flops = (f" (FLOPs {self.speedup_flops:.2f}x)" if self.speedup_flops is not None
                 and self.speedup_flops != self.speedup else "")
        memory = "" if self.memory is None else f", memory {self.memory:.2f} of BP's"
        return f"speed-up {self.speedup:.2f}x{flops}{memory}"

    def shown(self) -> str:
        """"0.8123 ± 0.0040 over 3 seeds (single seed 0.8200)", or the single seed alone."""
        if self.confirmed is None:
            return "" if self.accuracy is None else f"{self.accuracy:.4f}"
        return f"{self.confirmed.shown()} (single seed {self.single:.4f})"


def _row(label: str, trial: int | None, single: float, rec: TrialRecord | None, note: str,
         c: Confirmation | None) -> SummaryRow:
    if rec is None:  # end-to-end BP itself
        return SummaryRow(label, trial, c.mean if c else single, 1.0, note, single, c, None,
                          1.0)
    return SummaryRow(label, trial, c.mean if c else single, rec.speedup, note, single, c,
                      rec.speedup_flops, rec.memory_ratio)


def summary_rows(study: optuna.Study) -> list[SummaryRow]:
    """The best decoupling, then the reference trials and end-to-end BP."""
    best = best_trial(study)
    if best is None:
        return []
    conf = confirmations(study)
    rec = TrialRecord.of(best)
    d = rec.decoupling()
    rows = [_row("best", best.number, best.values[0], rec, describe(best),
                 conf.get(best.number))]
    for t in study.get_trials(deepcopy=False):
        r = TrialRecord.of(t)
        # an interrupted or surplus baseline was run again: its rerun is the row
        if r.baseline and r.curve and t.state.is_finished() and not (r.interrupted
                                                                      or r.surplus):
            note = "" if t.state == TrialState.COMPLETE else (
                f"{t.state.name.lower()} after epoch {len(r.curve)}")
            if t.number == best.number:
                note = "is the best"
            if r.infeasible:
                note = ", ".join(filter(None, [note, f"infeasible: {r.infeasible}"]))
            rows.append(_row(r.baseline, t.number, r.curve[-1], r, note,
                             conf.get(t.number)))
    backbone = d.backbone if d else ""
    bp = bp_baselines(study).get(backbone)
    if bp:
        rows.append(_row("backprop", None, bp.val_accuracy, None,
                         f"lr {bp.best_lr:g}, {bp.sweep_shown()}",
                         bp_confirmation(study, backbone)))
    return rows


def describe_confirmed(study: optuna.Study) -> str | None:
    """"confirmed over 3 seeds: 5 trials and BP" (with "at 9 epochs on 3000 images" for a
    promoted fidelity), or None when nothing is confirmed."""
    conf = list(confirmations(study).values())
    bp = [c for b in bp_baselines(study) if (c := bp_confirmation(study, b)) is not None]
    if not conf and not bp:
        return None
    sizes = sorted({len(c.seeds) for c in conf + bp})
    seeds = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    what = [f"{len(conf)} trial{'s' if len(conf) != 1 else ''}"] if conf else []
    fids = sorted({c.fidelity for c in conf + bp if c.fidelity is not None},
                  key=fidelity_level)
    verb = "promoted" if fids else "confirmed"
    at = "".join(f" to {fidelity_shown(f)}" for f in fids[-1:])
    return (f"{verb}{at} over {seeds} seed{'s' if seeds != '1' else ''}: "
            f"{' and '.join(what + (['BP'] if bp else []))}")


def verdict(gap: float, *, digits: int = 4) -> str:
    """How the best compares with another row, at the precision shown."""
    shown = round(gap, digits)
    return "beats" if shown > 0 else "ties" if shown == 0 else "does not beat"


def budget_of(study: optuna.Study) -> Fidelity | None:
    """The study's trial budget (epochs, training images; 0: all), None when not stored."""
    run = StoredRun.of(study)
    return None if run.epochs is None else (run.epochs, run.train_subset or 0)


def fidelity_of(c: Confirmation | None, budget: Fidelity | None) -> str:
    """What a figure was trained at: "9 epochs on 10000 images, promoted" for a promoted
    confirmation, else "3 epochs on 3000 images, the trial budget"."""
    if c is not None and c.fidelity is not None:
        return f"{fidelity_shown(c.fidelity)}, promoted"
    return "the trial budget" if budget is None else f"{fidelity_shown(budget)}, the trial budget"


def compared_at(a: Confirmation | None, b: Confirmation | None, budget: Fidelity | None
                ) -> str:
    """The fidelity a comparison of two figures is made at: "at F", or both where they
    differ."""
    fa, fb = fidelity_of(a, budget), fidelity_of(b, budget)
    return f"at {fa}" if fa == fb else f"at {fa} against {fb}"


def reversal_note(study: optuna.Study) -> str | None:
    """Said once by a study that promoted nothing: why its comparisons may not hold, and how
    to check them."""
    if any(c.fidelity is not None for c in confirmations(study).values()):
        return None
    budget = budget_of(study)
    at = f" ({fidelity_shown(budget)})" if budget is not None else ""
    return (f"note: these comparisons are at the trial budget{at}; close rankings there often "
            "reverse with longer training. To check, run the study again with --promote-top N "
            "(the N best, the references and BP trained again at --promote-epochs on "
            "--promote-subset images, then confirmed there)")
