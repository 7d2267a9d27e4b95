from __future__ import annotations

import json
from importlib import resources

import pytest

from bwbpf.spaces import (
    SCHEMA_ID,
    AuxSpec,
    BlockOptim,
    ConfigError,
    Decoupling,
    from_document,
    to_document,
)

D = Decoupling("vgg11", (2, 5), (AuxSpec("conv", 2, 0.5, "predsim"), AuxSpec("ir", 3)),
               (BlockOptim(lr=0.1), BlockOptim(optimizer="adamw", lr=1e-3), BlockOptim()), 0.5)


def test_schema_file_ships_with_the_package() -> None:
    text = resources.files("bwbpf.spaces").joinpath("decoupling.schema.json").read_text()
    assert json.loads(text)["$id"] == SCHEMA_ID


def test_round_trip_and_contents() -> None:
    text = D.to_json(input={"channels": 1, "size": [28, 28], "classes": 10},
                     metrics={"val_accuracy": 0.9}, provenance={"study": "s", "trial": 3})
    assert Decoupling.from_json(text) == D
    doc = json.loads(text)
    assert doc["schema"] == SCHEMA_ID and doc["backbone"]["family"] == "vgg"
    assert [b["units"] for b in doc["blocks"]] == [[0, 2], [2, 5], [5, 8]]
    assert doc["blocks"][-1]["aux"] is None
    assert doc["cuts"]["relative"] == [{"stage": 2, "fraction": 0.0},
                                       {"stage": 3, "fraction": 0.5}]


def mutate(change) -> dict:  # type: ignore[no-untyped-def]
    doc = to_document(D)
    change(doc)
    return doc


BAD = [
    ("missing field", lambda d: d.pop("blocks"), r"^\$: 'blocks' is a required property"),
    ("wrong type", lambda d: d["backbone"].update(width="wide"),
     r"^\$\.backbone\.width: 'wide' is not of type 'number'"),
    ("cut out of range", lambda d: d["cuts"].update(units=[2, 9]),
     r"^\$\.cuts\.units\[1\]: 9 out of range; vgg11 has 8 units, valid cuts are 1\.\.7"),
    ("unsorted cuts", lambda d: d["cuts"].update(units=[5, 2]),
     r"^\$\.cuts\.units\[1\]: 2 must be greater than cuts\.units\[0\]=5"),
    ("unknown head", lambda d: d["blocks"][1]["aux"].update(family="mlp"),
     r"^\$\.blocks\[1\]\.aux\.family: unknown aux head 'mlp'; valid: linear"),
    ("wrong schema id", lambda d: d.update(schema="bwbpf-search/decoupling/9"),
     r"^\$\.schema: 'bwbpf-search/decoupling/9' is not 'bwbpf-search/decoupling/1'"),
    ("absurd lr", lambda d: d["blocks"][0]["optim"].update(lr=1e300),
     r"^\$\.blocks\[0\]\.optim\.lr: 1e\+300 is greater than the maximum of 10"),
    ("absurd depth", lambda d: d["blocks"][0]["aux"].update(depth=10**9),
     r"^\$\.blocks\[0\]\.aux.*depth|^\$\.blocks\[0\]\.aux"),
    ("negative width", lambda d: d["backbone"].update(width=-0.5),
     r"^\$\.backbone\.width: -0\.5 is less than or equal to the minimum of 0"),
    ("depth beyond family", lambda d: d["blocks"][0]["aux"].update(depth=4),
     r"^\$\.blocks\[0\]\.aux\.depth: 4 not in 1\.\.3 for the conv head"),
    ("unknown backbone", lambda d: d["backbone"].update(name="vgg99"),
     r"^\$\.backbone\.name: unknown backbone 'vgg99'"),
    ("blocks not contiguous", lambda d: d["blocks"][1].update(units=[3, 5]),
     r"^\$\.blocks\[1\]\.units: \[3, 5\] does not continue"),
    ("relative form disagrees", lambda d: d["cuts"]["relative"][1].update(fraction=0.25),
     r"^\$\.cuts\.relative\[1\]: stage 3 fraction 0\.25 does not match cut 5"),
    ("aux on the last block", lambda d: d["blocks"][2].update(aux=d["blocks"][0]["aux"]),
     r"^\$\.blocks\[2\]\.aux: the last block learns from the global loss"),
    ("extra key", lambda d: d.update(colour="red"), r"^\$: Additional properties"),
    ("not an object", lambda d: d.clear(), r"^\$: 'schema' is a required property"),
]


@pytest.mark.parametrize(("change", "pattern"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_documents_name_the_json_path(change, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        from_document(mutate(change))


@pytest.mark.parametrize(("text", "pattern"), [
    ('{"schema": "bwbpf-search/decoupling/1", "backbone": {', r"not valid JSON \(line 1"),
    ("backbone: vgg11\n", r"not valid JSON"),
    ('{"schema": NaN}', r"NaN is not a JSON number"),
    ("[1, 2]", r"^\$: \[1, 2\] is not of type 'object'"),
])
def test_unparseable_text(text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        Decoupling.from_json(text)
