"""One self-contained HTML report of a study (plotly.js inside: it opens offline)."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from bwbpf.reports import draw, plots
from bwbpf.reports.frame import trials_frame
from bwbpf.reports.record import describe_counts, no_best, state_counts
from bwbpf.reports.standing import budget_of, compared_at, reversal_note, summary_rows
from bwbpf.reports.stored_run import StoredRun
from bwbpf.spaces.files import write_text_atomic

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: left; }
section { margin: 2em 0; } .note { color: #666; }
"""


def figures(study: optuna.Study) -> list[tuple[str, go.Figure]]:
    """Every figure that has data, with its id; figures without data are left out."""
    frame = trials_frame(study)
    if frame.empty or "value_" not in "".join(frame.columns):
        return []
    # (id, the figure's data, whether it has any, how it is drawn); lazily, in order
    makers: list[tuple[str, Callable[[], Any], Callable[[Any], Any], Callable[[Any], Any]]] = [
        ("history", lambda: plots.history(frame), lambda d: d.numbers, draw.draw_history),
        ("curves", lambda: plots.curves(study), lambda d: d.numbers, draw.draw_curves),
        ("importance", lambda: plots.importances(study), lambda d: d.params,
         draw.draw_importance),
        ("splits", lambda: plots.split_stats(frame), lambda d: d.boundaries, draw.draw_splits),
        ("blocks", lambda: plots.block_accuracy(study), lambda d: d is not None,
         draw.draw_block_accuracy),
        ("front", lambda: plots.front_figure(study),
         lambda d: d is not None and d.numbers, draw.draw_front),
        ("diagram", lambda: plots.diagram(study), lambda d: d is not None, draw.draw_diagram),
    ]
    out = []
    for name, make, has_data, draw_it in makers:
        data = make()
        if has_data(data):
            out.append((name, draw_it(data)))
    return out


def _summary_table(study: optuna.Study) -> str:
    rows = summary_rows(study)
    if not rows:
        return f'<p class="note">{html.escape(no_best(study)).capitalize()}.</p>'
    best, budget = rows[0].accuracy or 0.0, budget_of(study)
    cells = []
    for r in rows:
        gap = "" if r.label == "best" or r.accuracy is None else f"{best - r.accuracy:+.4f}"
        if gap:
            gap += f" {compared_at(rows[0].confirmed, r.confirmed, budget)}"
        c = r.confirmed
        acc = "" if r.accuracy is None else f"{r.accuracy:.4f}"
        acc += f" ± {c.std:.4f}" if c else ""
        seeds = str(len(c.seeds)) if c else "1"
        single = "" if r.single is None else f"{r.single:.4f}"
        spd = "" if r.speedup is None else f"{r.speedup:.2f}x"
        flops = "" if r.speedup_flops is None else f"{r.speedup_flops:.2f}x"
        memory = "" if r.memory is None else f"{r.memory:.2f}"
        trial = "" if r.trial is None else str(r.trial)
        cells.append(f"<tr><td>{html.escape(r.label)}</td><td>{trial}</td><td>{acc}</td>"
                     f"<td>{seeds}</td><td>{single}</td><td>{gap}</td><td>{spd}</td>"
                     f"<td>{flops}</td><td>{memory}</td><td>{html.escape(r.note)}</td></tr>")
    head = ("<tr><th></th><th>trial</th><th>val accuracy (mean ± std over seeds)</th>"
            "<th>seeds</th><th>single seed</th><th>best minus this</th>"
            "<th>speed-up over BP</th><th>from FLOPs</th><th>memory / BP's</th>"
            "<th></th></tr>")
    note = reversal_note(study) if len(rows) > 1 else None
    shown = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<table>{head}{''.join(cells)}</table>{shown}"


def storage_shown(url: str) -> str:
    """Where the study lives, with no credentials: user, password and query are dropped (a
    report gets shared, and a study stored by an older version may hold a password in its
    settings). Not search.study.storage.redact: reports never import search."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # journal:FILE
    before, _, host = rest.rpartition("@")
    if "?" in before:  # an '@' in the query (or a '?' in a password): nothing is safe to show
        return f"{scheme}://..."
    return f"{scheme}://{re.split(r'[?&]', host)[0]}"


def render(study: optuna.Study) -> str:
    run = StoredRun.of(study)
    if run.storage is not None:
        run = replace(run, storage=storage_shown(run.storage))
    facts = describe_counts(state_counts(study))
    detail = ", ".join(f"{k} {v}" for k, v in run.shown())
    limits = [f"{k} {v:g}" for k, v in run.constraints()]
    if limits:
        detail += f", constraints {', '.join(limits)}"
    parts = [f"<h1>bwbpf-search study {html.escape(study.study_name)}</h1>",
             f"<p>{html.escape(facts)}. {html.escape(detail)}</p>",
             "<section><h2>Summary</h2>", _summary_table(study), "</section>"]
    for name, fig in figures(study):
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}")
        parts.append(f'<section class="figure">{div}</section>')
    title = html.escape(f"bwbpf-search report: {study.study_name}")
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style>\n<script>{get_plotlyjs()}</script>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_report(study: optuna.Study, path: Path) -> None:
    write_text_atomic(path, render(study))
