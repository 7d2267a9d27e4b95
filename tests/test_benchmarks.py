"""The benchmark scripts run end to end in a tiny setting, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_check_smoke_on_cpu() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke",
                        "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for line in ("3-trial study, wall", "images/s BP-free / BP",
                 "pipelined (streams) / sequential time"):
        assert line in r.stdout


@pytest.mark.integration
def test_quality_experiment_tiny(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--tiny",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    import json

    rows = json.loads((tmp_path / "quality.json").read_text())["rows"]
    names = [(x["backbone"], x["row"]) for x in rows]
    assert ("vgg11", "backprop") in names and ("vgg11", "searched") in names
    assert ("vgg13", "searched on vgg11") in names and ("vgg13", "paper, no detach") in names
    assert all(len(x["test"]) == 2 for x in rows)  # every row over the seeds
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Quality" in text and "| vgg13 | searched on vgg11 |" in text
