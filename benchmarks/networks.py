"""Named networks end to end: a constrained search on torchvision models the tool does not
write itself, each winner against end-to-end BP and the paper-style decoupling at the proof's
row budget (10 epochs on 10,000 images, seeds 0 and 1, test split), on Fashion-MNIST at 32x32.

Per network: the units found (`bwbpf-search backbones`), a study of N trials at the trial
budget (3 epochs on 3,000 images) under >= 2x over BP and <= 0.6 of its memory by FLOPs (where
the network cannot reach that, the tightest pair it reaches of a short list, stated), then the
rows: `train --arch winner.json --compare-bp` and `train --arch paper`, with the search's
training (no augmentation, one-cycle). Results in OUT/networks.json.

    .venv/bin/python benchmarks/networks.py --out benchmarks/logs/networks
    .venv/bin/python benchmarks/networks.py --tiny --out /tmp/networks
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

CLI = [sys.executable, "-m", "bwbpf.search"]
VIT = ("torchvision:VisionTransformer?image_size=32&patch_size=8&num_layers=4&num_heads=4"
       "&hidden_dim=64&mlp_dim=128")
NETWORKS = {"vit_4x64": VIT, "mobilenet_v3_small": "torchvision:mobilenet_v3_small",
            "regnet_y_400mf": "torchvision:regnet_y_400mf",
            "efficientnet_b0": "torchvision:efficientnet_b0"}
CONSTRAINTS = ((2.0, 0.6), (1.8, 0.7), (1.5, 0.8), (1.3, 0.9))
FULL = {"trials": 12, "epochs": 3, "subset": 3000, "row": (10, 10000)}
TINY = {"trials": 2, "epochs": 1, "subset": 256, "row": (1, 512)}


def cli(*args: str, log: Path) -> subprocess.CompletedProcess[str]:
    with log.open("a") as f:
        f.write(f"$ bwbpf-search {' '.join(args)}\n")
    r = subprocess.run([*CLI, *args], capture_output=True, text=True)
    with log.open("a") as f:
        f.write(r.stdout + r.stderr + f"(exit {r.returncode})\n")
    return r


def search(key: str, net: str, b: dict[str, Any], out: Path, common: list[str]
           ) -> tuple[dict[str, Any], Path]:
    storage = f"sqlite:///{out / 'networks.db'}"
    doc = out / f"{key}.json"
    done = finished(key, storage, b["trials"])
    if done is not None and doc.is_file():  # searched before the rows stopped: rows only
        held = json.loads(doc.read_text())["constraints"]
        return {"constraints": [held["min_speedup"], held["max_memory"]], **done}, doc
    for speedup, memory in CONSTRAINTS:
        r = cli("run", "--backbone", net, "--study", key, "--storage", storage,
                "--n-trials", str(b["trials"]), "--epochs", str(b["epochs"]),
                "--train-subset", str(b["subset"]), "--min-speedup", str(speedup),
                "--max-memory", str(memory), "--cost-model", "flops", *common,
                log=out / f"{key}.log")
        if r.returncode == 0:
            break
    else:
        raise SystemExit(f"{key}: no constraint pair was reachable; see {out / key}.log")
    cli("export", "--study", key, "--storage", storage, "-o", str(doc), "--force",
        log=out / f"{key}.log")
    return {"constraints": [speedup, memory], **(finished(key, storage, 0) or {})}, doc


def finished(key: str, storage: str, trials: int) -> dict[str, Any] | None:
    """The study's trial count and mean seconds per finished trial, when it holds at least
    ``trials`` (None when it does not exist or holds fewer)."""
    try:
        study = optuna.load_study(study_name=key, storage=storage)
    except KeyError:
        return None
    times = [t.duration.total_seconds() for t in study.trials
             if t.duration is not None and t.state.name == "COMPLETE"]
    if len(study.trials) < trials or not times:
        return None
    return {"trials": len(study.trials), "seconds_per_trial": round(statistics.mean(times), 1)}


def test_accuracy(run: Path, part: str) -> float:
    return float(json.loads((run / "metrics.json").read_text())[part]["test_accuracy"])


def rows(key: str, net: str, doc: Path, b: dict[str, Any], out: Path, common: list[str]
         ) -> dict[str, list[float]]:
    epochs, images = b["row"]
    got: dict[str, list[float]] = {"search": [], "paper": [], "bp": []}
    for seed in (0, 1):
        row = ["--epochs", str(epochs), "--train-subset", str(images), "--seed", str(seed),
               "--no-augment", "--lr-schedule", "onecycle", "--force", *common]
        won, paper = out / f"{key}-search-{seed}", out / f"{key}-paper-{seed}"
        cli("train", "--arch", str(doc), "--compare-bp", "--out", str(won), *row,
            log=out / f"{key}.log")
        cli("train", "--arch", "paper", "--backbone", net, "--out", str(paper), *row,
            log=out / f"{key}.log")
        got["search"].append(test_accuracy(won, "blockwise"))
        got["bp"].append(test_accuracy(won, "backprop"))
        got["paper"].append(test_accuracy(paper, "blockwise"))
    return got


def units(net: str, out: Path, key: str) -> int:
    r = cli("backbones", net, "--image-size", "32", "--channels", "1", log=out / f"{key}.log")
    m = re.search(r": (\d+) units", r.stdout)
    return int(m.group(1)) if m else -1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--networks", default=",".join(NETWORKS))
    args = ap.parse_args()
    b = TINY if args.tiny else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["--dataset", "fashion-mnist", "--image-size", "32", "--threads", args.threads,
              "--device", "cpu", "-q"]
    results_file = args.out / "networks.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for key in args.networks.split(","):
        if key in results:
            continue
        start = time.time()
        net = NETWORKS[key]
        found, doc = search(key, net, b, args.out, common)
        res = {"network": net, "units": units(net, args.out, key), **found,
               "test": rows(key, net, doc, b, args.out, common),
               "document": json.loads(doc.read_text())["blocks"],
               "minutes": round((time.time() - start) / 60, 1)}
        results[key] = res
        results_file.write_text(json.dumps(results, indent=1))
        t = {k: statistics.mean(v) for k, v in res["test"].items()}
        print(f"{key}: {res['units']} units, {res['constraints']}, {res['seconds_per_trial']} s "
              f"per trial; test search {t['search']:.4f} paper {t['paper']:.4f} "
              f"BP {t['bp']:.4f} ({res['minutes']} min)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
