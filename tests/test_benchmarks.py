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
