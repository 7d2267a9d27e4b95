from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from bwbpf.search.cli import main
from bwbpf.spaces import (
    SCHEMA_ID,
    AuxSpec,
    BlockOptim,
    ConfigError,
    Decoupling,
    from_document,
    to_document,
)
from bwbpf.spaces.document import parse_json, upgrade
from bwbpf.spaces.input_shape import InputShape

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
     r"^\$\.schema: 'bwbpf-search/decoupling/9' is not 'bwbpf-search/decoupling/5'"),
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
    ("units disagree with the backbone", lambda d: d["backbone"].update(units=99),
     r"^\$\.backbone\.units: 99 does not match the backbone; vgg11 has 8 units"),
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


def test_a_constant_is_named_by_file_and_json_path() -> None:
    doc = to_document(D)
    doc["blocks"][0]["optim"]["lr"] = float("nan")
    doc["metrics"] = {"ideal speedup": float("inf")}
    text = json.dumps(doc)  # Python writes NaN and Infinity, which JSON does not have
    with pytest.raises(ConfigError) as e:
        parse_json(text, "--arch f.json")
    assert str(e.value) == "--arch f.json: $.blocks[0].optim.lr: NaN is not a JSON number"
    doc["blocks"][0]["optim"]["lr"] = 0.1
    with pytest.raises(ConfigError, match=r'^--arch f\.json: \$\.metrics\["ideal speedup"\]: '
                       "Infinity is not a JSON number$"):
        parse_json(json.dumps(doc), "--arch f.json")


HOSTILE = {
    "100,000 nested lists": "[" * 100_000,
    "a 5,000-digit integer": '{"schema": "bwbpf-search/decoupling/1", "x": ' + "7" * 5000 + "}",
    # parseable, but too deep for the schema check's repr of the bad value
    "nested 990 levels": json.dumps(to_document(D)).replace(
        '"units": 8', '"units": ' + "[" * 990 + "]" * 990, 1),
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_text_is_one_line_naming_the_file(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_json(text, "--arch f.json")
    assert str(e.value).startswith("--arch f.json: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_train_refuses_hostile_files_in_one_line(text: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(text)
    rc = main(["train", "--arch", str(arch), "--out", str(tmp_path / "run"), "--dataset",
               "synthetic", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and f"--arch {arch}: " in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_units_that_disagree_with_the_backbone_are_refused() -> None:
    doc = to_document(Decoupling.paper_default("vgg8b", width=0.25))
    assert doc["backbone"]["units"] == 6
    doc["backbone"]["units"] = 99
    with pytest.raises(ConfigError, match=r"^\$\.backbone\.units: 99 .* vgg8b has 6 units$"):
        from_document(doc)


@pytest.mark.parametrize("cuts", [[2, 9], [5, 2], [2, 2], [2.0, 5]])  # (the schema refuses 0)
def test_cuts_are_checked_alike_in_code_and_in_files(cuts: list) -> None:
    with pytest.raises(ConfigError) as in_code:
        Decoupling("vgg11", tuple(cuts), D.aux, D.optim, D.width)
    doc = to_document(D)
    doc["cuts"]["units"] = cuts
    with pytest.raises(ConfigError) as in_file:
        from_document(doc)
    assert str(in_file.value) == "$." + str(in_code.value).replace("cuts[", "cuts.units[")


def test_a_version_1_file_loads_and_its_sum_over_max_is_not_called_a_speedup() -> None:
    d = Decoupling.paper_default("vgg8b", width=0.25)
    doc = to_document(d, metrics={"ideal_speedup": 2.07, "val_accuracy": 0.8})
    doc["schema"] = "bwbpf-search/decoupling/1"
    assert from_document(doc) == d
    new = upgrade(doc)
    assert new["schema"] == SCHEMA_ID and new["metrics"] == {"block_parallelism": 2.07,
                                                              "val_accuracy": 0.8}
    assert doc["metrics"]["ideal_speedup"] == 2.07  # the caller's dict is not changed


def test_the_input_section_reads_back_as_written() -> None:
    shape = InputShape(1, (28, 28), 10, "fashion-mnist")
    doc = to_document(Decoupling.paper_default("vgg8b"), input=shape.section())
    assert from_document(doc) == Decoupling.paper_default("vgg8b")  # valid by the schema
    assert InputShape.of(doc) == shape
    assert shape.shape() == {"in_channels": 1, "image_size": (28, 28), "num_classes": 10}
    assert InputShape.of({k: v for k, v in doc.items() if k != "input"}) is None
