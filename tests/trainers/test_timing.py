"""The measured cost model: pieces timed once, blocks predicted from them."""

from __future__ import annotations

import pytest
import torch

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling
from bwbpf.trainers.timing import StepTimer

CPU = torch.device("cpu")


def timer(batch: int = 32, size: int = 28, **kw: object) -> StepTimer:
    return StepTimer(CPU, batch, in_channels=1, image_size=(size, size), num_classes=10,
                     **kw)  # type: ignore[arg-type]


def paper_cuts(aux: AuxSpec) -> Decoupling:
    return Decoupling("vgg8b", (2, 4, 5), (aux,) * 3, (BlockOptim(),) * 4, 0.25)


def test_blocks_and_bp_are_sums_of_their_timed_pieces() -> None:
    t = timer(repeats=1, warmup=0)
    d = paper_cuts(AuxSpec("conv", 1, 0.5))
    times = t.predict(d)
    units = t.units("vgg8b", 0.25)
    head_keys = [k for k in t.cache if "|head|conv|d1|x0.5|pred|" in k]
    assert len(units) == 6 and len(head_keys) == 3  # one per distinct input shape
    heads = [t.cache[k] for k in head_keys]
    cls = t.classifier("vgg8b", 0.25)
    assert times.backprop_seconds == pytest.approx(sum(units) + cls)
    assert sum(times.block_seconds) == pytest.approx(sum(units) + sum(heads) + cls)
    assert times.block_seconds[-1] == pytest.approx(units[5] + cls)
    assert times.speedup == pytest.approx(times.backprop_seconds / max(times.block_seconds))


def test_each_piece_is_timed_once_and_the_cache_is_reused() -> None:
    cache: dict[str, float] = {}
    d = paper_cuts(AuxSpec("linear"))
    first = timer(cache=cache, repeats=1, warmup=0).predict(d)
    pieces = dict(cache)
    # a second timer on the same cache (a resumed study, another worker) times nothing
    again = timer(cache=cache, repeats=1, warmup=0).predict(d)
    assert cache == pieces and again == first
    # another batch size is another context: timed anew, the old figures kept
    timer(batch=16, cache=cache, repeats=1, warmup=0).predict(d)
    assert len(cache) == 2 * len(pieces) and all(cache[k] == v for k, v in pieces.items())


def test_downstream_heads_are_timed_per_place_and_infopro_with_its_decoder() -> None:
    # Units 3 and 4 of vgg8b x0.25 give the same shape; downstream heads after them copy
    # different units, so each is its own piece. An infopro head is another piece than pred.
    t = timer(repeats=1, warmup=0)
    d = Decoupling("vgg8b", (3, 4, 5), (AuxSpec("downstream", 1),) * 3, (BlockOptim(),) * 4,
                   0.25)
    t.predict(d)
    keys = [k for k in t.cache if "|head|downstream|" in k]
    assert len(keys) == 3 and {k.rsplit("after ", 1)[1] for k in keys} == {"2", "3", "4"}
    t.predict(Decoupling("vgg8b", (3, 4, 5), (AuxSpec("linear", loss="infopro"),) * 3,
                         (BlockOptim(),) * 4, 0.25))
    assert any("|head|linear|d1|x1|infopro|" in k for k in t.cache)
