"""The trial objective: sample a decoupling, train it briefly BP-free, report, prune, record."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import optuna
import torch

from bwbpf.search.baselines import BP_ATTR
from bwbpf.search.budget import INTERRUPTED, SURPLUS, SurplusTrial, used
from bwbpf.search.pruning import CURVE, CurvePruner
from bwbpf.search.settings import SearchSettings
from bwbpf.search.study import package_version, redact
from bwbpf.spaces import Decoupling, build, sample, to_document
from bwbpf.spaces.document import compact
from bwbpf.trainers import Data, EpochMetrics, NetCost, NonFiniteLoss, TrainPlan, fit, measure_cost

log = logging.getLogger("bwbpf.search")
MB = 2**20
DOCUMENT = "decoupling"  # user attribute: the trial's versioned decoupling document
FAILURES = (NonFiniteLoss, torch.OutOfMemoryError, SurplusTrial)  # the trial fails, study goes on


def cost_attrs(cost: NetCost, batch_size: int) -> dict[str, Any]:
    """Costs known before training: they are objectives, and shown for every trial."""
    return {
        "block_flops": cost.block_flops,
        "block_params": cost.block_params,
        "ideal_speedup": round(cost.ideal_speedup, 4),
        "peak_activation_mb": round(cost.peak_saved_bytes * batch_size / MB, 3),
        "backprop_activation_mb": round(cost.backprop_saved_bytes * batch_size / MB, 3),
    }


class Objective:
    def __init__(self, settings: SearchSettings, data: Data, *, progress: bool = False) -> None:
        self.s, self.data, self.progress = settings, data, progress
        self.curve_pruner = CurvePruner(settings.pruner, min_epochs=settings.min_epochs,
                                        reduction_factor=settings.reduction_factor,
                                        startup_trials=settings.pruner_startup
                                        ) if settings.multi_objective else None
        self.plan = TrainPlan(epochs=settings.epochs, batch_size=settings.batch_size,
                              seed=settings.seed, device=settings.device,
                              schedule=settings.schedule,
                              devices=settings.devices, compile=settings.compile)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        if used(trial.study, before=trial.number) >= self.s.n_trials:
            trial.set_user_attr(SURPLUS, True)
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number} is past the study's {self.s.n_trials}")
        decoupling = sample(trial, self.s.space)
        try:
            return self.train(trial, decoupling)
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED, True)
            raise
        except torch.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            trial.set_user_attr("fail_reason", f"CUDA out of memory: {str(e).splitlines()[0]}")
            raise
        except NonFiniteLoss as e:
            trial.set_user_attr("fail_reason", str(e))
            raise

    def train(self, trial: optuna.Trial, d: Decoupling) -> float | tuple[float, ...]:
        data = self.data
        net = build(d, data.num_classes, data.in_channels, data.image_size, seed=self.s.seed)
        cost = measure_cost(net, data.in_channels, data.image_size)
        attrs = cost_attrs(cost, self.s.batch_size)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        metrics = {"ideal_speedup": attrs["ideal_speedup"], "block_flops": cost.block_flops,
                   "peak_activation_mb": attrs["peak_activation_mb"],
                   **self._bp(trial.study, d)}
        # The exportable document rides on the trial from its start (optuna-dashboard shows
        # it); its metrics are completed when the trial ends. A finished trial is read-only.
        trial.set_user_attr(DOCUMENT, compact(self._document(trial, d, metrics)))
        bar = self._bar(trial)
        curve: list[float] = []
        blocks: list[list[float]] = []

        def on_epoch(epoch: int, m: EpochMetrics) -> None:
            curve.append(round(m.val_accuracy, 5))
            blocks.append([round(a, 5) for a in m.block_val_accuracy])
            trial.set_user_attr(CURVE, curve)
            trial.set_user_attr("block_curve", blocks)
            if bar is not None:
                bar.set_postfix(val=f"{m.val_accuracy:.4f}")
                bar.update(1)
            self._maybe_prune(trial, epoch, m.val_accuracy, curve)

        try:
            result = fit(net, data, self.plan, on_epoch=on_epoch)
        finally:
            if bar is not None:
                bar.close()
        metrics.update(val_accuracy=round(result.val_accuracy, 5),
                       block_val_accuracy=blocks[-1] if blocks else [])
        trial.set_user_attr(DOCUMENT, compact(self._document(trial, d, metrics)))
        trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
        trial.set_user_attr("device", result.device)
        if result.peak_memory_bytes is not None:
            trial.set_user_attr("peak_memory_mb", round(result.peak_memory_bytes / MB, 1))
        values = {"accuracy": result.val_accuracy, "speedup": cost.ideal_speedup,
                  "memory": attrs["peak_activation_mb"]}
        out = tuple(float(values[o]) for o in self.s.objectives)
        return out if self.s.multi_objective else out[0]

    @staticmethod
    def _bp(study: optuna.Study, d: Decoupling) -> dict[str, Any]:
        bp = study.user_attrs.get(BP_ATTR, {}).get(d.backbone)
        return {"bp_val_accuracy": bp["val_accuracy"], "bp_lr": bp["best_lr"]} if bp else {}

    def _document(self, trial: optuna.Trial, d: Decoupling, metrics: dict[str, Any]
                  ) -> dict[str, Any]:
        data = self.data
        provenance = {"study": trial.study.study_name, "trial": trial.number,
                      "storage": redact(self.s.storage), "dataset": self.s.dataset,
                      "seed": self.s.seed, "epochs": self.s.epochs, "version": package_version(),
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        size = list(data.image_size)
        return to_document(d, input={"channels": data.in_channels, "size": size,
                                     "classes": data.num_classes, "dataset": self.s.dataset},
                           metrics=dict(metrics), provenance=provenance)

    def _maybe_prune(self, trial: optuna.Trial, epoch: int, acc: float, curve: list[float]) -> None:
        if self.curve_pruner is None:
            trial.report(acc, epoch)  # intermediate values: single-objective studies only
            prune = epoch < self.s.epochs and trial.should_prune()
        else:
            prune = epoch < self.s.epochs and self.curve_pruner.should_prune(
                trial.study, trial.number, curve)
        if prune:
            trial.set_user_attr("pruned_at", epoch)
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with val accuracy {acc:.4f}")

    def _bar(self, trial: optuna.Trial) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=self.s.epochs, desc=f"trial {trial.number}", unit="epoch", leave=False,
                    dynamic_ncols=True)
