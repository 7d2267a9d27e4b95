"""The data behind every figure (Optuna's pattern: compute, then draw)."""

from __future__ import annotations

import json

import optuna
import pandas as pd

from bwbpf.reports import plots, summary, trials_frame
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


def test_front_marks_the_non_dominated() -> None:
    frame = pd.DataFrame({"number": [0, 1, 2, 3], "state": ["COMPLETE"] * 4,
                          "value_accuracy": [0.9, 0.8, 0.7, 0.85],
                          "speedup": [1.0, 2.0, 1.5, 2.0]})
    f = plots.front(frame)
    assert f.on_front == [True, False, False, True]


def test_a_trial_that_breaks_a_constraint_is_neither_best_nor_on_the_front() -> None:
    frame = pd.DataFrame({"number": [0, 1, 2], "state": ["COMPLETE"] * 3,
                          "value_accuracy": [0.9, 0.8, 0.85], "speedup": [3.0, 2.0, 1.5],
                          "baseline": ["paper", None, None],
                          "infeasible": ["memory 0.70 of BP's > 0.50", None, None]})
    h = plots.history(frame)
    assert h.best[0] != h.best[0] and h.best[1:] == [0.8, 0.85]  # NaN, then feasible only
    assert h.baselines == ["paper, infeasible", "", ""]
    f = plots.front(frame)
    assert f.numbers == [1, 2] and f.on_front == [True, True]


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
    rows = summary(so)
    labels = [r.label for r in rows]
    assert labels[0] == "best" and labels[-1] == "backprop" and "paper" in labels
    assert rows[0].accuracy == max(t.values[0] for t in so.get_trials() if t.values)
    assert rows[-1].accuracy == so.user_attrs["bp_baseline"]["vgg8b"]["val_accuracy"]
