from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest

from bwbpf.reports import figures

FIGURES = {"history", "curves", "importance", "splits", "blocks", "front", "diagram"}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_is_self_contained_html(report_file: Path) -> None:
    text = report_file.read_text()
    parser = Tags()
    parser.feed(text)
    tags = parser.tags
    assert tags[0][0] == "html" and any(t == "body" for t, _ in tags)
    # no script or stylesheet is fetched from anywhere: plotly.js is inside the file
    assert not [a for t, a in tags if t == "script" and a.get("src")]
    assert not [a for t, a in tags if t == "link"]
    divs = {a["id"] for t, a in tags if t == "div" and (a.get("id") or "").startswith("fig-")}
    assert divs == {f"fig-{name}" for name in FIGURES}
    assert "Plotly.newPlot" in text and len(re.findall(r"<script", text)) >= len(FIGURES)
    assert "<h2>Summary</h2>" in text and "backprop" in text and "paper" in text
    # the table's comparisons name their fidelity; unpromoted, the note says what they are worth
    assert "at 2 epochs on all images, the trial budget" in text
    assert text.count("close rankings there often reverse with longer training") == 1


def test_every_figure_has_data(so: optuna.Study) -> None:
    figs = dict(figures(so))
    assert set(figs) == FIGURES
    for name, fig in figs.items():
        assert fig.data, name
        for trace in fig.data:
            points = [getattr(trace, k, None) for k in ("x", "y", "z")]
            assert any(p is not None and len(p) > 0 for p in points), name


@pytest.mark.integration
def test_report_renders_in_chromium(report_file: Path, browser, tmp_path: Path) -> None:
    browser.open(report_file.as_uri())
    browser.wait_for("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 7")
    plots = browser.evaluate("""Array.from(document.querySelectorAll('.plotly-graph-div')).map(
        d => ({id: d.id, svg: d.querySelectorAll('.main-svg').length,
               traces: (d.data || []).length,
               drawn: d.querySelectorAll('.trace, .scatterlayer path, .hm, image').length}))""")
    assert {p["id"] for p in plots} == {f"fig-{n}" for n in FIGURES}
    assert all(p["svg"] > 0 and p["traces"] > 0 and p["drawn"] > 0 for p in plots), plots
    shot = tmp_path / "report.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert browser.errors() == []
