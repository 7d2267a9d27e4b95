"""`make bench`: runs every CPU benchmark here and writes their tables to benchmarks/out/bench.md
(docs/results.md quotes the figures, with the date and machine this file records).

    .venv/bin/python benchmarks/run_all.py [--only memory,step_cost]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import Row  # noqa: E402

BENCHMARKS = ["memory", "step_cost", "cost_model", "parallel", "distributed",
              "workers"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(BENCHMARKS))
    ap.add_argument("--out", type=Path, default=HERE / "out" / "bench.md")
    args = ap.parse_args()
    sections: list[tuple[str, list[Row], float]] = []
    for name in args.only.split(","):
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        rows: list[Row] = importlib.import_module(name).run()
        for r in rows:
            print(r.line(), flush=True)
        sections.append((name, rows, time.perf_counter() - start))
    text = render(sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


def render(sections: list[tuple[str, list[Row], float]]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), CUDA {'yes' if torch.cuda.is_available() else 'no'}",
        "- command: `make bench` (each script also runs alone: "
        "`.venv/bin/python benchmarks/<name>.py`)",
        "- every figure here was measured by the script named in its section, in this run",
        "",
    ]
    for name, rows, seconds in sections:
        lines += [f"## {name} ({seconds:.0f} s)", "",
                  "| measure | measured | target | met | detail |", "|---|---|---|---|---|"]
        lines += [f"| {r.name} | {r.measured:.3f} | {r.target} | {'yes' if r.ok else 'no'} | "
                  f"{r.detail} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
