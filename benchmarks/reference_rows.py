"""The published designs as a study places them, trained at the proof's row budget: what
``search_efficiency.py``'s "best reference" would be with today's references, for studies
stored before a reference changed. Fashion-MNIST, 10 epochs on 10,000 images, seeds 0 and 1,
test split; cached with the proof's rows (OUT/out/search-efficiency-runs.json).

    .venv/bin/python benchmarks/reference_rows.py --backbones vgg8b --references predsim
    .venv/bin/python benchmarks/reference_rows.py --tiny
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import long_run_parser, long_run_start
from search_efficiency import FULL, TINY, Rows

from bwbpf.search.run.baselines import PUBLISHED, published
from bwbpf.search.trial.constraints import meets, of_space
from bwbpf.search.trial.placement import Placer
from bwbpf.spaces import SearchSpace

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = long_run_parser(__doc__, HERE)
    ap.add_argument("--backbones", default="vgg8b,resnet18")
    ap.add_argument("--references", default=",".join(PUBLISHED))
    args = ap.parse_args()
    names = args.references.split(",")
    if unknown := [n for n in names if n not in PUBLISHED]:
        ap.error(f"--references: unknown {', '.join(unknown)} (any of {', '.join(PUBLISHED)})")
    cache = long_run_start(args)
    b = TINY if args.tiny else FULL
    rows = Rows(b, cache)
    data = rows.data
    shape: dict[str, Any] = {"in_channels": data.in_channels, "image_size": data.image_size,
                             "num_classes": data.num_classes}
    for backbone in args.backbones.split(","):
        space = SearchSpace(backbones=(backbone,), width=b.width, min_speedup=b.min_speedup,
                            max_memory=b.max_memory)
        placer = Placer(space, of_space(space), **shape)
        for name, d in published(space, placer, names).items():
            r = placer.pieces(backbone).of(d)
            if not meets(of_space(space), r):
                print(f"{backbone} {name}: infeasible at every placement", flush=True)
                continue
            heads = sorted({f"{a.family}/{a.loss}" for a in d.aux})
            print(f"{backbone} {name}: K={d.num_blocks} cuts {list(d.cuts)} {heads} "
                  f"({r.speedup:.2f}x, memory {r.memory_ratio:.2f} by FLOPs): test "
                  f"{rows.test(d):.4f} at the row budget", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
