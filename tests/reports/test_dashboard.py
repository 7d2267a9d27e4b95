"""optuna-dashboard, started by `bwbpf-search dashboard`, shows a study made by `run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

import optuna
import pytest

from bwbpf.spaces import SCHEMA_ID

pytestmark = pytest.mark.integration


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def dashboard(db: str, free_port: int):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-m", "bwbpf.search", "dashboard", "--storage", db,
                             "--port", str(free_port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    base = f"http://127.0.0.1:{free_port}"
    end = time.time() + 60
    while True:
        try:
            get(f"{base}/api/meta")
            break
        except OSError:
            if time.time() > end or proc.poll() is not None:
                proc.kill()
                raise AssertionError(f"dashboard did not start: {proc.communicate()}")
            time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def test_dashboard_api_and_page(dashboard: str, so: optuna.Study, browser) -> None:
    studies = get(f"{dashboard}/api/studies")["study_summaries"]
    by_name = {s["study_name"]: s for s in studies}
    assert {"so", "mo"} <= set(by_name)
    detail = get(f"{dashboard}/api/studies/{by_name['so']['study_id']}")
    trials = detail["trials"]
    assert len(trials) == len(so.get_trials())
    for t in trials:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert {"decoupling", "curve", "block_curve", "speedup"} <= set(attrs)
        doc = json.loads(attrs["decoupling"])  # shown whole, not cut at 1,024 characters
        assert doc["schema"] == SCHEMA_ID
        assert doc["provenance"]["trial"] == t["number"]
        if t["state"] == "Pruned":
            assert t["intermediate_values"], "pruned trials keep their curve"
        note = t["note"]["body"]  # the decoupling as a table (reports.note)
        assert note.startswith(f"### Trial {t['number']}") and "| block | units |" in note
    assert detail["best_trials"] and detail["has_intermediate_values"]

    browser.open(f"{dashboard}/dashboard/studies/{by_name['so']['study_id']}")
    browser.wait_for("document.body.innerText.includes('so')", timeout=60)
    browser.wait_for("document.querySelectorAll('.js-plotly-plot, .main-svg').length > 0",
                     timeout=60)
    assert [e for e in browser.errors() if "favicon" not in e] == []
