"""Plotly figures drawn from the data in ``reports.plots`` (no computation here)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bwbpf.reports.plots import (
    BlockAccuracy,
    Curves,
    Diagram,
    Front,
    History,
    Importance,
    SplitStats,
)

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6",
           "#9D755D"]
STATE_COLOUR = {"COMPLETE": "#4C78A8", "PRUNED": "#BBBBBB", "FAIL": "#E45756",
                "RUNNING": "#F58518"}


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=380,
                      margin=dict(l=60, r=20, t=50, b=50))
    if x:
        fig.update_layout(xaxis_title=x)
    if y:
        fig.update_layout(yaxis_title=y)
    if x in ("epoch", "trial"):
        fig.update_xaxes(dtick=1)
    return fig


def draw_history(h: History) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=h.numbers, y=h.values, mode="markers", name="trial",
                    text=h.baselines, marker=dict(color=PALETTE[0]))
    fig.add_scatter(x=h.numbers, y=h.best, mode="lines", name="best so far",
                    line=dict(color=PALETTE[1]))
    tagged = [(n, v, b) for n, v, b in zip(h.numbers, h.values, h.baselines) if b]
    if tagged:
        fig.add_scatter(x=[t[0] for t in tagged], y=[t[1] for t in tagged], mode="markers+text",
                        text=[t[2] for t in tagged], textposition="top center", name="baselines",
                        marker=dict(color=PALETTE[3], size=11, symbol="diamond"))
    return _layout(fig, "Optimisation history", "trial", "validation accuracy")


def draw_curves(c: Curves) -> go.Figure:
    fig = go.Figure()
    shown: set[str] = set()
    for n, state, curve in zip(c.numbers, c.states, c.curves):
        fig.add_scatter(x=list(range(1, len(curve) + 1)), y=curve, mode="lines+markers",
                        name=state.lower(), legendgroup=state, showlegend=state not in shown,
                        hovertext=f"trial {n}", line=dict(color=STATE_COLOUR.get(state, "#999")),
                        opacity=0.8)
        shown.add(state)
    return _layout(fig, "Validation accuracy per epoch (pruned trials in grey)", "epoch",
                   "validation accuracy")


def draw_importance(imp: Importance) -> go.Figure:
    fig = go.Figure(go.Bar(x=imp.importances[::-1], y=imp.params[::-1], orientation="h",
                           marker=dict(color=PALETTE[0])))
    return _layout(fig, "Parameter importance for high accuracy (PED-ANOVA)", "importance",
                   "parameter")


def draw_splits(s: SplitStats) -> go.Figure:
    # Two scales, two rows: how often the top trials cut at a unit (heatmap, 0..1), and the
    # mean accuracy of all complete trials with a cut there (bars).
    x = [str(b) for b in s.boundaries]
    acc = [a if a is not None else float("nan") for a in s.mean_accuracy]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.35, 0.65])
    fig.add_trace(go.Heatmap(z=[s.top_frequency], x=x, y=[f"top {s.n_top}"], zmin=0, zmax=1,
                             colorscale="Blues", colorbar=dict(title="share", len=0.4, y=0.85),
                             hovertemplate="unit %{x}: %{z:.2f} of the top trials cut here"
                                           "<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=acc, marker=dict(color=PALETTE[0]), name="mean accuracy",
                         showlegend=False), row=2, col=1)
    fig.update_yaxes(title_text="mean accuracy", row=2, col=1)
    fig.update_xaxes(title_text="unit a block starts at", row=2, col=1)
    return _layout(fig, f"Split positions on {s.backbone}", "", "")


def draw_block_accuracy(b: BlockAccuracy) -> go.Figure:
    fig = go.Figure()
    for k, curve in enumerate(b.curves):
        label = f"block {k + 1}" if k < len(b.curves) - 1 else f"block {k + 1} (output)"
        fig.add_scatter(x=list(range(1, len(curve) + 1)), y=curve, mode="lines+markers",
                        name=label, line=dict(color=PALETTE[k % len(PALETTE)]))
    return _layout(fig, f"Per-block accuracy of the best trial ({b.number})", "epoch",
                   "validation accuracy of the block's head")


def draw_front(f: Front) -> go.Figure:
    fig = go.Figure()
    colours = [PALETTE[3] if on else PALETTE[0] for on in f.on_front]
    fig.add_scatter(x=f.speedup, y=f.accuracy, mode="markers", marker=dict(color=colours),
                    hovertext=[f"trial {n}" for n in f.numbers], name="trials")
    pts = sorted((s, a) for s, a, on in zip(f.speedup, f.accuracy, f.on_front) if on)
    fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines",
                    name="Pareto front", line=dict(color=PALETTE[3], dash="dot"))
    return _layout(fig, "Accuracy against speed-up over end-to-end BP (one device per block)",
                   "speed-up over BP (x)",
                   "validation accuracy (confirmed: the mean over seeds)")


def draw_diagram(d: Diagram) -> go.Figure:
    fig = go.Figure()
    for u in d.units:
        colour = PALETTE[u.block % len(PALETTE)]
        fig.add_shape(type="rect", x0=u.unit, x1=u.unit + 0.9, y0=0, y1=1,
                      fillcolor=colour, line=dict(color="white"))
    xs = [u.unit + 0.45 for u in d.units]
    fig.add_scatter(x=xs, y=[0.5] * len(xs), mode="text",
                    text=[f"{u.channels}<br>{u.size[0]}x{u.size[1]}" for u in d.units],
                    hovertext=[f"unit {u.unit}, stage {u.stage}, block {u.block + 1}"
                               for u in d.units], showlegend=False)
    ends = {}
    for u in d.units:
        ends[u.block] = u.unit
    fig.add_scatter(x=[ends[k] + 0.45 for k in sorted(ends)], y=[1.35] * len(ends),
                    mode="text", text=[f"<b>block {k + 1}</b><br>{d.heads[k]}"
                                       for k in sorted(ends)], showlegend=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, range=[-0.2, 1.8])
    fig.update_layout(title=d.title + " (units: channels, map size; colour = block)",
                      template="plotly_white", height=300, margin=dict(l=20, r=20, t=50, b=20))
    return fig
