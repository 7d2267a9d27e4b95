"""The trial objective: sample a decoupling, train it briefly BP-free, report, prune, record."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import optuna

from bwbpf.reports.note import save_note
from bwbpf.reports.record import MB, TrialRecord, save
from bwbpf.reports.seed_record import Confirmation
from bwbpf.reports.study_attrs import bp_baselines
from bwbpf.search.study.budget import SurplusTrial, used
from bwbpf.search.study.pruning import CurvePruner
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.study.storage import package_version, redact
from bwbpf.search.study.workers import mark_worker
from bwbpf.search.trial.constraints import judge, of_space
from bwbpf.search.trial.costs import cost_record
from bwbpf.search.trial.placement import Placer
from bwbpf.spaces import DecoupledNet, Decoupling, build, to_document
from bwbpf.spaces.document import Trained
from bwbpf.spaces.encoding import draw
from bwbpf.spaces.input_shape import InputShape
from bwbpf.trainers import (
    Data,
    EpochMetrics,
    NonFiniteLoss,
    OutOfMemory,
    TrainPlan,
    TrainResult,
    fit,
    measure_cost,
    memory_guard,
)
from bwbpf.trainers.timing import StepTimer

log = logging.getLogger("bwbpf.search")
FAILURES = (NonFiniteLoss, OutOfMemory, SurplusTrial)  # the trial fails, study goes on


def write_note(study: optuna.Study, trial: optuna.trial.FrozenTrial,
               confirmation: Confirmation | None = None) -> None:
    """The trial's note in optuna-dashboard (reports.note), written when it ends (an Optuna
    callback: pruned, rejected and failed trials too) and when it is confirmed. Best-effort:
    a note only shows what the trial stores, so no failure to write one may end a trial, a
    confirmation or the search (Ctrl-C is no Exception, and still stops them)."""
    try:
        save_note(study, trial, confirmation)
    except Exception as e:
        log.warning("trial %d: its dashboard note was not written (%s: %s)", trial.number,
                    type(e).__name__, e)


def trial_plan(s: SearchSettings, seed: int) -> TrainPlan:
    """A trial's training: the study's budget, schedule and devices, initialised from ``seed``
    (the study's seed in the search; others when a trial is confirmed)."""
    return TrainPlan(epochs=s.epochs, batch_size=s.batch_size, seed=seed, device=s.device,
                     schedule=s.schedule, devices=s.devices, compile=s.compile,
                     augment=s.space.augment, lr_schedule=s.space.lr_schedule)


def study_placer(s: SearchSettings, data: Data, timer: StepTimer | None) -> Placer:
    """The placer of a study's trials and references: its space, constraints, input, timer."""
    return Placer(s.space, of_space(s.space), in_channels=data.in_channels,
                  image_size=data.image_size, num_classes=data.num_classes, timer=timer)


class Objective:
    def __init__(self, settings: SearchSettings, data: Data, *, progress: bool = False,
                 placer: Placer | None = None) -> None:
        """``placer``: the study's (search.run.runner.start), holding its step times
        (search.trial.costs); without one, a placer on FLOPs."""
        self.s, self.data, self.progress = settings, data, progress
        self.constraints = of_space(settings.space)
        self.placer = placer or study_placer(settings, data, None)
        self.timer = self.placer.timer
        self.curve_pruner = CurvePruner(settings.pruner, min_epochs=settings.min_epochs,
                                        reduction_factor=settings.reduction_factor,
                                        startup_trials=settings.pruner_startup
                                        ) if settings.multi_objective else None
        self.plan = trial_plan(settings, settings.seed)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        # An enqueued baseline or warm start carries its mark; a re-queued trial carries its failed
        # predecessor's attributes, which are cleared.
        mark_worker(trial)  # a journal file's stand-in for heartbeats (search.study.workers)
        stored = TrialRecord.of(trial)
        rec = save(trial, stored, TrialRecord(baseline=stored.baseline,
                                              warm_start=stored.warm_start))
        if used(trial.study, before=trial.number) >= self.s.n_trials:
            save(trial, rec, replace(rec, surplus=True))
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number} is past the study's {self.s.n_trials}")
        drawn = draw(trial, self.s.space)
        try:
            with memory_guard(f"timing the pieces of trial {trial.number}"):
                decoupling, lighter = ((drawn.decoupling(), False) if rec.baseline
                                       else self.placer.place(drawn))
            if decoupling.cuts != drawn.cuts or lighter:
                rec = save(trial, rec, replace(rec, drawn_cuts=drawn.cuts,
                                               lighter_heads=lighter))
            with memory_guard(f"building and training trial {trial.number}"):
                return self.train(trial, decoupling, rec)
        except KeyboardInterrupt:
            save(trial, rec, replace(rec, interrupted=True))
            raise
        except (OutOfMemory, NonFiniteLoss) as e:
            save(trial, rec, replace(rec, fail_reason=str(e)))
            raise

    def train(self, trial: optuna.Trial, d: Decoupling, rec: TrialRecord
              ) -> float | tuple[float, ...]:
        net = build(d, self.data.num_classes, self.data.in_channels, self.data.image_size,
                    seed=self.s.seed)
        costs, metrics = self._costs(trial, d, net)
        # The exportable document rides on the trial from its start (optuna-dashboard shows
        # it); its metrics are completed when the trial ends. A finished trial is read-only.
        first = replace(costs, baseline=rec.baseline, warm_start=rec.warm_start,
                        drawn_cuts=rec.drawn_cuts, lighter_heads=rec.lighter_heads,
                        document=self._document(trial, d, metrics))
        if self.constraints:
            broken = self.verdict(trial, d)
            if broken and rec.baseline is None:  # never trained: no time, no budget
                save(trial, rec, replace(first, rejected=broken))
                raise optuna.TrialPruned(f"rejected by the constraints: {broken}")
            first = replace(first, infeasible=broken)  # a baseline still runs, marked
        rec = save(trial, rec, first)
        result, rec = self._fit(trial, net, rec)
        metrics.update(val_accuracy=round(result.val_accuracy, 5),
                       block_val_accuracy=list(rec.block_curve[-1]) if rec.block_curve else [])
        peak = result.peak_memory_bytes
        save(trial, rec, replace(
            rec, document=self._document(trial, d, metrics),
            train_seconds=round(result.train_seconds, 3), device=result.device,
            peak_memory_mb=round(peak / MB, 1) if peak is not None else None))
        values = {"accuracy": result.val_accuracy, "speedup": costs.speedup,
                  "memory": costs.memory_ratio}
        out = tuple(float(values[o] or 0.0) for o in self.s.objectives)
        return out if self.s.multi_objective else out[0]

    def verdict(self, trial: optuna.Trial, d: Decoupling) -> str | None:
        """Why ``d`` breaks the study's constraints (None when it meets them), set on
        ``trial`` for the sampler: the placer's rule on the placer's figures, unrounded, so a
        trial the placer calls feasible is never rejected."""
        return judge(trial, self.constraints, self.placer.ratios(d))

    def _costs(self, trial: optuna.Trial, d: Decoupling, net: DecoupledNet
               ) -> tuple[TrialRecord, dict[str, Any]]:
        """The costs known before training, as recorded and as the document's metrics."""
        cost = measure_cost(net, self.data.in_channels, self.data.image_size)
        times = None if self.timer is None else self.timer.predict(d)
        costs = cost_record(cost, times, self.data.batch_size_for(self.s.batch_size))
        metrics = {"speedup": costs.speedup, "speedup_flops": costs.speedup_flops,
                   "cost_model": self.s.cost_model,
                   "compute_overhead": costs.compute_overhead,
                   "memory_ratio": costs.memory_ratio, "block_flops": list(cost.block_flops),
                   **({"block_seconds": list(costs.block_seconds),
                       "backprop_seconds": costs.backprop_seconds} if times else {}),
                   "peak_activation_mb": costs.peak_activation_mb, **self._bp(trial.study, d)}
        return costs, metrics

    def _fit(self, trial: optuna.Trial, net: DecoupledNet, rec: TrialRecord
             ) -> tuple[TrainResult, TrialRecord]:
        """Trains, recording (and pruning on) each epoch's validation accuracy."""
        bar = self._bar(trial)

        def on_epoch(epoch: int, m: EpochMetrics) -> None:
            nonlocal rec
            rec = save(trial, rec, replace(
                rec, curve=(*rec.curve, round(m.val_accuracy, 5)),
                block_curve=(*rec.block_curve, tuple(round(a, 5) for a in m.block_val_accuracy))))
            if bar is not None:
                bar.set_postfix(val=f"{m.val_accuracy:.4f}")
                bar.update(1)
            self._maybe_prune(trial, epoch, m.val_accuracy, rec)

        try:
            result = fit(net, self.data, self.plan, on_epoch=on_epoch)
        finally:
            if bar is not None:
                bar.close()
        return result, rec

    @staticmethod
    def _bp(study: optuna.Study, d: Decoupling) -> dict[str, Any]:
        bp = bp_baselines(study).get(d.backbone)
        return Trained(bp_lr=bp.best_lr, bp_val_accuracy=bp.val_accuracy).metrics() if bp else {}

    def _document(self, trial: optuna.Trial, d: Decoupling, metrics: dict[str, Any]
                  ) -> dict[str, Any]:
        data = self.data
        provenance = {"study": trial.study.study_name, "trial": trial.number,
                      "storage": redact(self.s.storage), "dataset": self.s.dataset,
                      "seed": self.s.seed, "epochs": self.s.epochs, "version": package_version(),
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        shape = InputShape(data.in_channels, data.image_size, data.num_classes, self.s.dataset)
        return to_document(d, input=shape.section(),
                           metrics=dict(metrics), provenance=provenance,
                           training=Trained(self.s.space.augment,
                                            self.s.space.lr_schedule).training())

    def _maybe_prune(self, trial: optuna.Trial, epoch: int, acc: float, rec: TrialRecord
                     ) -> None:
        if self.curve_pruner is None:
            trial.report(acc, epoch)  # intermediate values: single-objective studies only
            prune = epoch < self.s.epochs and trial.should_prune()
        else:
            prune = epoch < self.s.epochs and self.curve_pruner.should_prune(
                trial.study, trial.number, list(rec.curve))
        # A reference or a --warm-start trial trains in full: what the winner is compared with,
        # or the user's candidate, and a first epoch ranks decouplings poorly
        # (benchmarks/fidelity.py; Hyperband stopped the AugLocal reference at 0.64 after one
        # epoch, which in full reached 0.82 and promoted was the best reference). They still
        # report, so the pruner compares the others with them.
        if prune and rec.warm_start is None and not rec.baseline:
            save(trial, rec, replace(rec, pruned_at=epoch))
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with val accuracy {acc:.4f}")

    def _bar(self, trial: optuna.Trial) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=self.s.epochs, desc=f"trial {trial.number}", unit="epoch", leave=False,
                    dynamic_ncols=True)
