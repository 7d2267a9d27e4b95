"""What a run prints: a progress bar with one line per finished trial, and the closing summary
(the best against BP and the reference decouplings)."""

from __future__ import annotations

import logging
import math

import optuna
from optuna.trial import TrialState

from bwbpf.reports.record import (
    TrialRecord,
    describe,
    describe_counts,
    no_best,
    rank_key,
    state_counts,
)
from bwbpf.reports.seed_record import Confirmation, Fidelity
from bwbpf.reports.standing import (
    SummaryRow,
    budget_of,
    compared_at,
    describe_confirmed,
    reversal_note,
    summary_rows,
    verdict,
)
from bwbpf.reports.study_attrs import confirmations
from bwbpf.search.study import budget
from bwbpf.search.study.settings import SearchSettings

log = logging.getLogger("bwbpf.search")


class Progress:
    """A bar over the study's trials with the best so far, and one line per finished trial."""

    def __init__(self, study: optuna.Study, s: SearchSettings) -> None:
        self.s, self.enabled, self.bar = s, not s.quiet, None
        # The best so far, kept: each finished trial is ranked once (budget.Changes), by the
        # report's order; no trial is confirmed while the search runs.
        self.changes = budget.Changes()
        self.best: optuna.trial.FrozenTrial | None = None
        self.key = rank_key(confirmations(study)) if self.enabled else None
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=s.n_trials, initial=budget.used(study), desc=s.study,
                            unit="trial", dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.bar is None:
            # quiet: a failed trial is still worth a warning (Optuna's own line is filtered)
            rec = TrialRecord.of(trial)
            if trial.state == optuna.trial.TrialState.FAIL and not (rec.interrupted
                                                                    or rec.surplus):
                log.warning(trial_line(trial))
            return
        from tqdm import tqdm

        tqdm.write(trial_line(trial))
        self.bar.n = min(self.s.n_trials, budget.used(study))
        best = self.best_so_far(study)
        if best is not None:
            self.bar.set_postfix(best=f"{best.values[0]:.4f} (#{best.number})")
        self.bar.refresh()

    def best_so_far(self, study: optuna.Study) -> optuna.trial.FrozenTrial | None:
        """``best_trial(study)``, from the trials finished since the last call."""
        assert self.key is not None
        for t in self.changes.since(study.get_trials(deepcopy=False)):
            if t.state == TrialState.COMPLETE and TrialRecord.of(t).feasible and (
                    self.best is None or self.key(t) < self.key(self.best)):
                self.best = t
        return self.best

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def trial_line(t: optuna.trial.FrozenTrial) -> str:
    rec = TrialRecord.of(t)
    mark = rec.baseline or rec.warm_start
    tag = f" [{mark}]" if mark else ""
    what = describe(t)
    if t.state == optuna.trial.TrialState.COMPLETE:
        vals = " ".join(f"{v:.4f}" for v in t.values)
        mark = f"  (infeasible: {rec.infeasible})" if rec.infeasible else ""
        return f"trial {t.number}{tag}: {vals}  {what}{mark}"
    if rec.rejected:
        return f"trial {t.number}: rejected ({rec.rejected}), not trained  {what}".rstrip()
    extra = rec.fail_reason or (f"at epoch {rec.pruned_at}" if rec.pruned_at else "")
    if rec.infeasible:
        extra += f" (infeasible: {rec.infeasible})"
    return f"trial {t.number}{tag}: {t.state.name.lower()} {extra}  {what}".rstrip()


def summary(study: optuna.Study) -> list[str]:
    """Best against the BP baseline and the reference decouplings, whichever wins; confirmed
    accuracies (the mean over seeds) next to their single seed."""
    lines = [f"study {study.study_name}: {describe_counts(state_counts(study))}"]
    confirmed = describe_confirmed(study)
    if confirmed:
        lines.append(confirmed)
    rows = summary_rows(study)
    if not rows:
        return lines + [no_best(study)]
    best, at_budget = rows[0], budget_of(study)
    lines.append(f"best     trial {best.trial}: val {best.shown()}  {best.note}")
    if best.costs():
        lines.append(f"         {best.costs()} (over end-to-end BP)")
    for r in rows[1:]:
        gap = (best.accuracy or 0.0) - (r.accuracy or 0.0)
        at = compared_at(best.confirmed, r.confirmed, at_budget)
        if r.label == "backprop":
            lines.append(f"backprop ({r.note}): val {r.shown()}  (best {gap:+.4f} {at}: "
                         f"the search {verdict(gap)} end-to-end BP)")
        else:
            state = f", {r.note}" if r.note else ""
            versus = "" if r.trial == best.trial else f"  (best {gap:+.4f} {at})"
            lines.append(f"{r.label:8s} trial {r.trial}: val {r.shown()}{state}{versus}")
            if r.trial != best.trial and r.costs():
                lines.append(f"         {r.costs()}")
    note = reversal_note(study) if len(rows) > 1 else None
    return (lines + versus_references(rows, at_budget)
            + versus_transferred(study, best, at_budget)
            + ([note] if note else []))


def versus_transferred(study: optuna.Study, best: SummaryRow, at_budget: Fidelity | None
                       ) -> list[str]:
    """One line in a study warm-started by `run --warm-start`: the best against the transferred
    decoupling (each by its confirmed mean where it has one, else its single seed); the mark
    says when it was carried with one head family on every block."""
    done = [(t, r) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if (r := TrialRecord.of(t)).start_kind == "transferred"]
    if not done or best.accuracy is None:
        return []
    t, rec = done[-1]
    what = "the transferred decoupling" + (f", {rec.start_detail}" if rec.start_detail else "")
    if t.number == best.trial:
        return [f"against {what}: it is the best (trial {t.number})"]
    c = confirmations(study).get(t.number)
    acc, how = (c.mean, "confirmed") if c else (t.values[0], "single seed")
    gap = best.accuracy - acc
    return [f"against {what} (trial {t.number}, {how} {acc:.4f}): the "
            f"best {'beats' if gap > 0 else 'does not beat'} it by {gap:+.4f} "
            f"{compared_at(best.confirmed, c, at_budget)}"]


def versus_references(rows: list[SummaryRow], at_budget: Fidelity | None = None
                      ) -> list[str]:
    """One line: how the best compares with the strongest reference decoupling (a feasible
    one when any is)."""
    best, refs = rows[0], [r for r in rows[1:] if r.label != "backprop"
                           and r.accuracy is not None]
    if best.accuracy is None or not refs:
        return []
    if any(r.trial == best.trial for r in refs):
        return [f"the best is a reference: "
                f"{next(r.label for r in refs if r.trial == best.trial)}"]
    feasible = [r for r in refs if "infeasible" not in r.note] or refs
    top = max(feasible, key=lambda r: r.accuracy or 0.0)
    gap = best.accuracy - (top.accuracy or 0.0)
    which = "feasible reference" if "infeasible" not in top.note else "reference"
    return [f"against the references: the best {'beats' if gap > 0 else 'does not beat'} the "
            f"strongest {which}, {top.label} (trial {top.trial}), by {gap:+.4f} "
            f"{compared_at(best.confirmed, top.confirmed, at_budget)}"
            f"{noise(gap, best.confirmed, top.confirmed)}"]


def noise(gap: float, a: Confirmation | None, b: Confirmation | None) -> str:
    """Whether ``gap`` (a's mean - b's) stands out of the seeds' noise: outside two standard
    errors of the difference of the means, where both were confirmed over 2 or more seeds at
    the same fidelity. A gap inside them says the search cannot tell the two apart."""
    if (a is None or b is None or len(a.seeds) < 2 or len(b.seeds) < 2
            or a.fidelity != b.fidelity):
        return ""
    two_se = 2 * math.sqrt(a.std ** 2 / len(a.seeds) + b.std ** 2 / len(b.seeds))
    if abs(gap) > two_se:
        return f" (outside the seeds' noise: 2 standard errors {two_se:.4f})"
    return (f" (within the seeds' noise: 2 standard errors {two_se:.4f}; a longer budget or "
            "more seeds would tell them apart)")
