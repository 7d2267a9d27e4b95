"""What a `train` run is asked to do, as its folder's settings.json records it: a --resume must
ask the same (but for how the decoupling was transferred and the cost model its speed-up is
judged by), and metrics.json repeats it."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from bwbpf.spaces.limits import CostModel

# Compared by --resume: everything but these (how the decoupling was placed: the decoupling
# itself is compared; what the speed-up is judged by, not how it trains).
NOT_COMPARED = ("transferred", "cost_model")
STORED_AS = {"blocks_per_rank": "placement"}  # the key settings.json has always used


@dataclass(frozen=True)
class TrainSettings:
    decoupling: dict[str, Any]  # Decoupling.to_dict()
    dataset: str
    epochs: int
    batch_size: int
    seed: int
    train_subset: int | None
    val_size: int
    image_size: int | None
    compare_bp: bool
    bp_lr: float | None  # None without --compare-bp
    schedule: str
    devices: tuple[str, ...]
    augment: bool
    lr_schedule: str
    cost_model: CostModel
    transferred: dict[str, Any] | None = None  # the file, target and rule it was carried by
    ranks: int | None = None  # `--schedule distributed` only, with its blocks per rank
    blocks_per_rank: tuple[int, ...] | None = None  # recorded as "placement", its former name

    def with_ranks(self, world: int, blocks_per_rank: tuple[int, ...] | None) -> TrainSettings:
        """A distributed run's settings: the ranks and blocks per rank too (--resume needs
        them)."""
        return replace(self, ranks=world, blocks_per_rank=blocks_per_rank or None)

    def record(self) -> dict[str, Any]:
        """The JSON object settings.json holds (the keys in the order they have always been
        written; `transferred` only when transferred, `ranks` and `placement` only when
        distributed)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "transferred" and value is None:
                continue
            if f.name in ("ranks", "blocks_per_rank") and self.ranks is None:
                continue
            out[STORED_AS.get(f.name, f.name)] = list(value) if isinstance(value, tuple) else value
        return out

    def differs_from(self, old: dict[str, Any]) -> str | None:
        """The first compared setting a stored settings.json has another value of."""
        return next((k for k, v in self.record().items()
                     if k not in NOT_COMPARED and old.get(k) != v), None)
