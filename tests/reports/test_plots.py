"""The data behind every figure (Optuna's pattern: compute, then draw)."""

from __future__ import annotations

import json

import optuna
import pandas as pd

from bwbpf.reports import pareto, plots, summary_rows, trials_frame
from bwbpf.reports.record import TrialRecord
from bwbpf.reports.stored_run import SETTINGS
from bwbpf.spaces import from_document, get_backbone


def test_history_is_the_running_best(so: optuna.Study) -> None:
    h = plots.history(trials_frame(so))
    done = [t for t in so.get_trials() if t.state.name == "COMPLETE"]
    assert h.numbers == [t.number for t in done]
    assert h.best == [max(h.values[: i + 1]) for i in range(len(h.values))]
    assert h.baselines[:2] == ["paper", "uniform"]


def test_curves_include_pruned_trials(so: optuna.Study) -> None:
    c = plots.curves(so)
    assert "PRUNED" in c.states and len(c.numbers) == len(so.get_trials())
    for n, curve in zip(c.numbers, c.curves):
        assert curve == so.get_trials()[n].user_attrs["curve"]


def test_split_stats_on_a_hand_made_frame() -> None:
    frame = pd.DataFrame({
        "number": [0, 1, 2, 3], "state": ["COMPLETE"] * 3 + ["PRUNED"],
        "value_accuracy": [0.9, 0.8, 0.5, None], "backbone": ["vgg8b"] * 4,
        "cuts": ["2 4", "2", "1 3 5", "2"]})
    s = plots.split_stats(frame, top_fraction=0.5)  # top 2 of 3 complete: "2 4" and "2"
    assert s.backbone == "vgg8b" and s.boundaries == [1, 2, 3, 4, 5] and s.n_top == 2
    assert s.top_frequency == [0.0, 1.0, 0.0, 0.5, 0.0]
    assert s.mean_accuracy[1] == (0.9 + 0.8) / 2 and s.mean_accuracy[0] == 0.5
    assert s.mean_accuracy[4] == 0.5


def hand_study(points: list[tuple[float, ...]], objectives: tuple[str, ...] = ("accuracy",),
               infeasible: dict[int, str] | None = None) -> optuna.Study:
    """A study in memory: per trial (accuracy, speed-up, further objective values...)."""
    directions = ["minimize" if o == "memory" else "maximize" for o in objectives]
    study = optuna.create_study(directions=directions)
    study.set_user_attr(SETTINGS, {"objectives": list(objectives)})
    for n, (acc, speedup, *more) in enumerate(points):
        trial = study.ask()
        rec = TrialRecord(speedup=speedup, infeasible=(infeasible or {}).get(n))
        for k, v in rec.attrs().items():
            trial.set_user_attr(k, v)
        values = {"accuracy": acc, "speedup": speedup}
        study.tell(trial, [values.get(o, more[0] if more else 0.0) for o in objectives])
    return study


def test_front_marks_the_non_dominated() -> None:
    f = plots.front_figure(hand_study([(0.9, 1.0), (0.8, 2.0), (0.7, 1.5), (0.85, 2.0)]))
    assert f is not None and f.on_front == [True, False, False, True]
    assert [t.number for t in pareto.front(
        hand_study([(0.9, 1.0), (0.8, 2.0), (0.7, 1.5), (0.85, 2.0)]))] == [0, 3]


def test_a_further_objective_is_an_axis_in_its_direction() -> None:
    """Memory (lower is better) beside accuracy and the speed-up, which is always an axis."""
    study = hand_study([(0.8, 2.0, 0.5), (0.8, 2.0, 0.4), (0.7, 3.0, 0.9)],
                       ("accuracy", "memory"))
    assert [t.number for t in pareto.front(study)] == [1, 2]


def test_a_trial_that_breaks_a_constraint_is_neither_best_nor_on_the_front() -> None:
    frame = pd.DataFrame({"number": [0, 1, 2], "state": ["COMPLETE"] * 3,
                          "value_accuracy": [0.9, 0.8, 0.85], "speedup": [3.0, 2.0, 1.5],
                          "baseline": ["paper", None, None],
                          "infeasible": ["memory 0.70 of BP's > 0.50", None, None]})
    h = plots.history(frame)
    assert h.best[0] != h.best[0] and h.best[1:] == [0.8, 0.85]  # NaN, then feasible only
    assert h.baselines == ["paper, infeasible", "", ""]
    f = plots.front_figure(hand_study([(0.9, 3.0), (0.8, 2.0), (0.85, 1.5)],
                               infeasible={0: "memory 0.70 of BP's > 0.50"}))
    assert f is not None and f.numbers == [1, 2] and f.on_front == [True, True]


def test_block_accuracy_and_diagram_of_the_best(mo: optuna.Study) -> None:
    best = max((t for t in mo.get_trials() if t.state.name == "COMPLETE"),
               key=lambda t: t.values[0])
    b = plots.block_accuracy(mo)
    assert b is not None and b.number == best.number
    assert b.final == best.user_attrs["block_curve"][-1]
    d = from_document(json.loads(best.user_attrs["decoupling"]))
    assert len(b.curves) == d.num_blocks
    diagram = plots.diagram(mo)
    assert diagram is not None
    assert len(diagram.units) == get_backbone(d.backbone).num_units
    assert [u.block for u in diagram.units if u.unit in d.cuts] == list(range(1, d.num_blocks))
    assert len(diagram.heads) == d.num_blocks and diagram.units[0].size == (16, 16)


def test_summary_puts_best_first_then_baselines_and_bp(so: optuna.Study) -> None:
    rows = summary_rows(so)
    labels = [r.label for r in rows]
    assert labels[0] == "best" and labels[-1] == "backprop" and "paper" in labels
    assert rows[0].accuracy == max(t.values[0] for t in so.get_trials() if t.values)
    assert rows[-1].accuracy == so.user_attrs["bp_baseline"]["vgg8b"]["val_accuracy"]
