"""The versioned JSON document of a decoupling: what `export` writes and `train` reads.

Validation is two-stage: the JSON Schema shipped beside this module (structure, types,
ranges), then the semantic rules (known backbone and heads, contiguous blocks, cuts that agree
with the blocks and with their relative form). Every error names the JSON path.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.transfer import relative_cuts

if TYPE_CHECKING:
    from bwbpf.spaces.decoupling import Decoupling

SCHEMA_ID = "bwbpf-search/decoupling/1"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("bwbpf.spaces").joinpath("decoupling.schema.json").read_text()
    return dict(json.loads(text))


def to_document(d: Decoupling, *, input: dict[str, Any] | None = None,
                metrics: dict[str, Any] | None = None,
                provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = get_backbone(d.backbone)
    ranges = d.block_ranges()
    doc: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "backbone": {"name": d.backbone, "family": spec.family, "width": d.width,
                     "units": spec.num_units},
    }
    if input is not None:
        doc["input"] = input
    doc["blocks"] = [{"units": list(r), "aux": asdict(d.aux[k]) if k < len(d.aux) else None,
                      "optim": asdict(d.optim[k])} for k, r in enumerate(ranges)]
    doc["cuts"] = {"units": list(d.cuts),
                   "relative": [asdict(r) for r in relative_cuts(d.backbone, d.cuts)]}
    doc["metrics"] = metrics or {}
    doc["provenance"] = provenance or {}
    return doc


def compact(doc: dict[str, Any]) -> str:
    """The document as one compact JSON string (how trials carry it: optuna-dashboard shows
    string attributes whole, but cuts structured ones at 1,024 characters)."""
    return json.dumps(doc, separators=(",", ":"))


def as_document(value: Any) -> dict[str, Any] | None:
    """A trial attribute (compact string, or a dict) as a document dict; None otherwise."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON (line {e.lineno} column {e.colno}: "
                          f"{e.msg})") from None


def _no_constant(name: str) -> float:
    raise ConfigError(f"$: {name} is not a JSON number")


def from_document(doc: Any) -> Decoupling:
    """Validates a parsed document; returns its Decoupling."""
    from bwbpf.spaces.decoupling import AuxSpec, BlockOptim, Decoupling

    _check_schema(doc)
    name = doc["backbone"]["name"]
    spec = _at("$.backbone.name", lambda: get_backbone(name))
    if doc["backbone"]["family"] != spec.family:
        raise ConfigError(f"$.backbone.family: {name} is a {spec.family}, not "
                          f"{doc['backbone']['family']}")
    blocks, n = doc["blocks"], spec.num_units
    _check_cuts(doc["cuts"]["units"], name, n)
    for k, b in enumerate(blocks):
        a, e = b["units"]
        start = 0 if k == 0 else blocks[k - 1]["units"][1]
        if a != start or not a < e <= n or (k == len(blocks) - 1 and e != n):
            raise ConfigError(f"$.blocks[{k}].units: [{a}, {e}] does not continue the blocks "
                              f"before it (starts at {start}) within {name}'s {n} units")
        last = k == len(blocks) - 1
        if (b["aux"] is None) != last:
            raise ConfigError(f"$.blocks[{k}].aux: " + ("the last block learns from the global "
                              "loss; its aux must be null" if last else "an aux head is needed"))
    cuts = tuple(b["units"][0] for b in blocks[1:])
    if list(cuts) != doc["cuts"]["units"]:
        raise ConfigError(f"$.cuts.units: {doc['cuts']['units']} does not match the blocks, "
                          f"which start at {list(cuts)}")
    _check_relative(doc["cuts"]["relative"], name, cuts)
    aux = tuple(_at(f"$.blocks[{k}].aux", lambda b=b: AuxSpec(**b["aux"]))
                for k, b in enumerate(blocks[:-1]))
    optim = tuple(_at(f"$.blocks[{k}].optim", lambda b=b: BlockOptim(**b["optim"]))
                  for k, b in enumerate(blocks))
    return _at("$", lambda: Decoupling(name, cuts, aux, optim, doc["backbone"]["width"]))


def _check_schema(doc: Any) -> None:
    import jsonschema

    if isinstance(doc, dict) and doc.get("schema") not in (None, SCHEMA_ID):
        raise ConfigError(f"$.schema: {doc.get('schema')!r} is not {SCHEMA_ID!r} (a newer or "
                          "foreign file?)")
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        msg = error.message if len(error.message) <= 160 else error.message[:157] + "..."
        raise ConfigError(f"{error.json_path}: {msg}")


def _check_cuts(cuts: list[int], name: str, n: int) -> None:
    for i, c in enumerate(cuts):
        if not 1 <= c <= n - 1:
            raise ConfigError(f"$.cuts.units[{i}]: {c} out of range; {name} has {n} units, "
                              f"valid cuts are 1..{n - 1}")
        if i and c <= cuts[i - 1]:
            raise ConfigError(f"$.cuts.units[{i}]: {c} must be greater than "
                              f"cuts.units[{i - 1}]={cuts[i - 1]} (increasing, no empty block)")


def _check_relative(rel: list[dict[str, Any]], name: str, cuts: tuple[int, ...]) -> None:
    if len(rel) != len(cuts):
        raise ConfigError(f"$.cuts.relative: {len(rel)} entries for {len(cuts)} cuts")
    expected = relative_cuts(name, cuts)
    for i, (r, want) in enumerate(zip(rel, expected)):
        if r["stage"] != want.stage or not math.isclose(r["fraction"], want.fraction,
                                                        abs_tol=1e-6):
            raise ConfigError(f"$.cuts.relative[{i}]: stage {r['stage']} fraction "
                              f"{r['fraction']} does not match cut {cuts[i]} of {name} "
                              f"(stage {want.stage}, fraction {want.fraction})")


def _at(path: str, make: Any) -> Any:
    """Runs ``make``; a ConfigError from it ("field: message") is re-raised under the JSON
    path ("$.blocks[0].aux.field: message")."""
    try:
        return make()
    except ConfigError as e:
        text = str(e)
        head = text.split(":", 1)[0]
        joined = f"{path}.{text}" if head.isidentifier() else f"{path}: {text}"
        raise ConfigError(joined) from None


def dumps(doc: Any) -> str:
    """Indented JSON with short lists of numbers kept on one line (diff- and eye-friendly)."""
    inline: dict[str, str] = {}

    def fold(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fold(x) for k, x in v.items()}
        if isinstance(v, list):
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                key = f"@@{len(inline)}@@"
                inline[key] = json.dumps(v)
                return key
            return [fold(x) for x in v]
        return v

    text = json.dumps(fold(doc), indent=2)
    for key, value in inline.items():
        text = text.replace(f'"{key}"', value)
    return text + "\n"
