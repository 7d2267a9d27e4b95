"""Transfer that keeps a decoupling's constraints on deeper and wider nets
(search.winners.carry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bwbpf.search.trial.constraints import of_space
from bwbpf.search.trial.placement import Placer
from bwbpf.search.trial.reach import cut_sets
from bwbpf.search.winners.carry import carry
from bwbpf.spaces import Decoupling, SearchSpace, UserError, build, from_document, to_document
from bwbpf.spaces.document import SCHEMA_ID, SCHEMA_V3
from bwbpf.spaces.encoding import draw
from bwbpf.spaces.limits import Limits
from bwbpf.spaces.random_trial import RandomTrial
from bwbpf.spaces.transfer import positions, retarget
from bwbpf.trainers import measure_cost

from .conftest import FAST, Runner

SHAPE = {"in_channels": 1, "image_size": (28, 28), "num_classes": 10}  # Fashion-MNIST's
LIMITS = Limits(2.0, 0.6, "flops")
# (source, target backbone, target width): the pairs the Transfer evidence measures
PAIRS = [("vgg8b", "vgg11", None), ("vgg8b", "vgg16", None), ("resnet18", "resnet34", None),
         ("resnet18", "resnet50", None), ("vgg8b", "vgg8b", 0.5)]
SYN = ["--dataset", "synthetic", "--batch-size", "64", "--device", "cpu", "--epochs", "1",
       "--train-subset", "128", "--val-size", "64"]


def winners(backbone: str, n: int = 3) -> list[Decoupling]:
    """Decouplings a constrained search on ``backbone`` x0.25 could export: drawn from the
    default space and placed feasibly (what the trials are)."""
    space = SearchSpace(backbones=(backbone,), min_speedup=LIMITS.min_speedup,
                        max_memory=LIMITS.max_memory)
    placer = Placer(space, of_space(space), **SHAPE)
    out: list[Decoupling] = []
    for seed in range(100):
        d = placer.place(draw(RandomTrial(seed), space))[0]
        speedup, memory = costs(d)
        if speedup >= 2.0 and memory <= 0.6:  # not the heavy draws no placement rescues
            out.append(d)
        if len(out) == n:
            return out
    raise AssertionError(f"fewer than {n} feasible draws on {backbone}")


def costs(d: Decoupling) -> tuple[float, float]:
    """Speed-up and memory ratio as the trials measure them: a probe of the built net."""
    c = measure_cost(build(d, SHAPE["num_classes"], SHAPE["in_channels"], SHAPE["image_size"]),
                     SHAPE["in_channels"], SHAPE["image_size"])
    return round(c.speedup, 4), round(c.memory_ratio, 4)


@pytest.mark.integration  # builds and counts nets whole
@pytest.mark.parametrize(("src", "dst", "width"), PAIRS)
def test_the_transfer_meets_the_constraints_on_the_target(src: str, dst: str,
                                                          width: float | None) -> None:
    kept = 0
    for d in winners(src):
        stage = d.transfer(dst, width)
        try:
            c = carry(d, LIMITS, dst, width, shape=SHAPE)
        except UserError as e:  # refused: then it says the best the target reaches
            assert "at best" in str(e) and "\n" not in str(e)
            continue
        kept += 1
        t = c.decoupling
        assert (t.backbone, t.width) == (dst, width or d.width)
        speedup, memory = costs(t)
        assert speedup >= 2.0 and memory <= 0.6, (t.cuts, speedup, memory)
        assert c.ratios is not None and (round(c.ratios.speedup, 4),
                                         round(c.ratios.memory_ratio, 4)) == (speedup, memory)
        s_speedup, s_memory = costs(stage)
        if s_speedup >= 2.0 and s_memory <= 0.6:  # the stage rule holds: kept as it is
            assert t == stage
        else:  # the nearest placement that holds, with the source's number of blocks if any
            assert t.cuts != stage.cuts
            if t.num_blocks == d.num_blocks:  # heads travel with their blocks (a downstream
                # head's depth follows the units after its block)
                assert [(a.family, a.width, a.loss) for a in t.aux] == [
                    (a.family, a.width, a.loss) for a in stage.aux] and t.optim == stage.optim
    assert kept  # not every winner refused: the rule places some on every target


@pytest.mark.integration  # builds and counts nets whole
def test_the_nearest_feasible_placement_is_chosen() -> None:
    """vgg8b's winners on VGG-16: the stage rule puts the depth VGG-16 adds in the last block
    and breaks 2x; no feasible cut set of the same K lies nearer the source's cuts."""
    moved = 0
    for d in winners("vgg8b", 4):
        stage = d.transfer("vgg16")
        c = carry(d, LIMITS, "vgg16", shape=SHAPE)
        if c.decoupling == stage:
            continue
        moved += 1
        src = positions("vgg8b", d.cuts)

        def distance(cuts: tuple[int, ...]) -> float:
            ours = positions("vgg16", cuts)
            return (sum(min(abs(x - y) for y in src) for x in ours)
                    + sum(min(abs(x - y) for y in ours) for x in src))

        chosen = distance(c.decoupling.cuts)
        k = c.decoupling.num_blocks
        nearer = [cuts for cuts in cut_sets(13, k, 1) if distance(cuts) < chosen - 1e-9]
        for cuts in nearer[:40]:  # each nearer cut set breaks a constraint
            s, m = costs(retarget(d, "vgg16", cuts))
            assert s < 2.0 or m > 0.6, cuts
    assert moved  # the case the rule exists for occurs


@pytest.mark.integration  # builds and counts nets whole
def test_a_document_without_constraints_transfers_as_before() -> None:
    for d in winners("vgg8b"):
        c = carry(d, Limits(), "vgg16", shape=SHAPE)
        assert c.decoupling == d.transfer("vgg16") and c.rule == "stages"
        c = carry(d, LIMITS, "vgg16", shape=SHAPE, ignore=True)
        assert c.decoupling == d.transfer("vgg16")


@pytest.mark.integration  # builds and counts nets whole
def test_the_refusal_names_the_best_the_target_reaches() -> None:
    d = winners("vgg8b", 1)[0]
    with pytest.raises(UserError) as e:
        carry(d, Limits(50.0, None, "flops"), "vgg16", shape=SHAPE)
    some = [Decoupling("vgg16", cuts, (d.aux[0],) * len(cuts), (d.optim[0],) * (len(cuts) + 1),
                       d.width) for cuts in [(4,), (2, 4), (2, 4, 7)]]
    best = max(costs(x)[0] for x in some)
    text = str(e.value)
    assert text.startswith("transfer to vgg16 x0.25: no placement") and "\n" not in text
    reached = float(text.split("at best ")[1].split("x")[0])
    assert best <= reached < 50  # at least what a few placements reach, short of the limit


def document(d: Decoupling, limits: Limits | None, schema: str | None = None) -> str:
    doc = to_document(d, input={"channels": 3, "size": [16, 16], "classes": 10},
                      constraints=None if limits is None else limits.section())
    if schema is not None:
        doc["schema"] = schema
    return json.dumps(doc)


def test_train_carries_a_constrained_file_and_refuses_an_impossible_one(
        cli: Runner, tmp_path: Path) -> None:
    d = Decoupling.paper_default("vgg8b", width=0.125)
    ok = tmp_path / "ok.json"
    ok.write_text(document(d, Limits(1.5, None, "flops")))
    rc, _, err = cli("train", "--arch", str(ok), "--backbone", "vgg16", "--out",
                     str(tmp_path / "ok"), *SYN)
    assert rc == 0, err
    line = [x for x in err.splitlines() if "vgg8b x0.125 -> vgg16 x0.125" in x]
    assert len(line) == 1 and "--min-speedup 1.5 met" in line[0]
    trained = json.loads((tmp_path / "ok" / "metrics.json").read_text())["blockwise"]
    t = from_document(trained["decoupling"])
    assert t.backbone == "vgg16" and costs_at(t, 3, (16, 16))[0] >= 1.5
    settings = json.loads((tmp_path / "ok" / "settings.json").read_text())
    assert settings["transferred"]["from"] == d.to_dict()

    bad = tmp_path / "bad.json"
    bad.write_text(document(d, Limits(50.0, None, "flops")))
    rc, out, err = cli("train", "--arch", str(bad), "--backbone", "vgg16", "--out",
                       str(tmp_path / "bad"), *SYN)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "at best" in err
    assert not (tmp_path / "bad").exists()
    rc, _, err = cli("train", "--arch", str(bad), "--backbone", "vgg16", "--out",
                     str(tmp_path / "bad"), "--ignore-constraints", "--stop-after", "1", *SYN,
                     "--epochs", "2")
    assert rc == 0, err
    assert "--min-speedup 50 BROKEN" in err
    assert not (tmp_path / "bad" / "metrics.json").exists()  # stopped after epoch 1 of 2
    rc, _, err = cli("train", "--arch", str(bad), "--backbone", "vgg16", "--out",
                     str(tmp_path / "bad"), "--ignore-constraints", "--resume", *SYN,
                     "--epochs", "2")
    assert rc == 0, err
    assert "BROKEN" not in err  # resumed with the cuts it started with, not placed again
    assert (tmp_path / "bad" / "metrics.json").exists()


def costs_at(d: Decoupling, channels: int, size: tuple[int, int]) -> tuple[float, float]:
    c = measure_cost(build(d, 10, channels, size), channels, size)
    return c.speedup, c.memory_ratio


def test_a_schema_3_document_still_loads_and_transfers(cli: Runner, tmp_path: Path) -> None:
    d = Decoupling.paper_default("vgg11", width=0.125)
    old = tmp_path / "v3.json"
    old.write_text(document(d, None, SCHEMA_V3))
    assert from_document(json.loads(old.read_text())) == d
    rc, _, err = cli("train", "--arch", str(old), "--backbone", "vgg13", "--out",
                     str(tmp_path / "t"), *SYN)
    assert rc == 0, err
    doc = json.loads((tmp_path / "t" / "metrics.json").read_text())["blockwise"]["decoupling"]
    assert from_document(doc) == d.transfer("vgg13")  # no constraints: the stage rule


def test_export_carries_the_constraints_and_keeps_them_on_the_target(cli: Runner, db: str,
                                                                     tmp_path: Path) -> None:
    rc, _, err = cli("-q", "run", "--storage", db, "--study", "c", "--n-trials", "2",
                     "--no-baselines", "--sampler", "random", "--pruner", "none",
                     "--min-speedup", "1.8", "--max-memory", "0.7", *FAST, "--epochs", "1",
                     "--train-subset", "128", "--val-size", "64", "--cost-model", "flops")
    assert rc == 0, err
    here = tmp_path / "here.json"
    rc, _, err = cli("export", "--storage", db, "--study", "c", "-o", str(here))
    assert rc == 0, err
    doc = json.loads(here.read_text())
    assert doc["schema"] == SCHEMA_ID and "transfer" not in doc
    assert doc["constraints"] == {"cost_model": "flops", "min_speedup": 1.8, "max_memory": 0.7}
    src = from_document(doc)

    there = tmp_path / "there.json"
    rc, out, err = cli("export", "--storage", db, "--study", "c", "-o", str(there),
                       "--backbone", "vgg16")
    assert rc == 0, err
    assert out.strip() == str(there) and len(err.strip().splitlines()) == 1
    assert "-> vgg16 x0.25" in err and "--min-speedup 1.8 met, --max-memory 0.7 met" in err
    carried = json.loads(there.read_text())
    assert carried["constraints"] == doc["constraints"]
    t = from_document(carried)
    speedup, memory = costs_at(t, 3, (16, 16))  # the synthetic set's 3x16x16
    assert speedup >= 1.8 - 1e-4 and memory <= 0.7 + 1e-4
    assert carried["transfer"]["from"] == {"backbone": "vgg8b", "width": src.width,
                                           "cuts": list(src.cuts)}
    assert carried["transfer"]["speedup"] == pytest.approx(speedup, abs=1e-4)
    assert "val_accuracy" not in carried["metrics"]  # the source's, not the target's

    rc, _, err = cli("export", "--storage", db, "--study", "c", "-o", str(tmp_path / "x.json"),
                     "--backbone", "resnet18")
    assert rc == 2 and "same family only" in err and not (tmp_path / "x.json").exists()
    before = there.read_bytes()  # a refused transfer with --force loses nothing written
    rc, _, err = cli("export", "--storage", db, "--study", "c", "-o", str(there), "--force",
                     "--backbone", "resnet50")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and there.read_bytes() == before


def test_distributed_refuses_a_transfer_judged_by_measured_times(cli: Runner,
                                                                 tmp_path: Path) -> None:
    d = Decoupling.paper_default("vgg8b", width=0.125)
    f = tmp_path / "measured.json"
    f.write_text(document(d, Limits(1.5, None, "measured")))
    rc, _, err = cli("train", "--arch", str(f), "--backbone", "vgg16", "--out",
                     str(tmp_path / "r"), "--schedule", "distributed", "--nproc", "2", *SYN)
    assert rc == 2 and "ranks" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_end_to_end_bp_carries_as_one_block_or_is_refused() -> None:
    bp = Decoupling.end_to_end("vgg8b", width=0.25)
    assert carry(bp, Limits(), "vgg16", shape=SHAPE).decoupling.num_blocks == 1
    with pytest.raises(UserError, match="one block"):
        carry(bp, LIMITS, "vgg16", shape=SHAPE)  # 1x: only more blocks could meet 2x
