"""The versioned JSON document of a decoupling: what `export` writes and `train` reads.

Validation is two-stage: the JSON Schema shipped beside this module (structure, types,
ranges), then the semantic rules (known backbone and heads, contiguous blocks, cuts that agree
with the blocks and with their relative form). Every error names the JSON path.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from bwbpf.spaces.backbones import get_backbone
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.partition import check_cuts
from bwbpf.spaces.transfer import relative_cuts
from bwbpf.spaces.values import unique_keys

if TYPE_CHECKING:  # the type only: spaces.decoupling builds from a document checked here
    from bwbpf.spaces.decoupling import Decoupling

SCHEMA_ID = "bwbpf-search/decoupling/5"
SCHEMA_V4 = "bwbpf-search/decoupling/4"
SCHEMA_V3 = "bwbpf-search/decoupling/3"
SCHEMA_V2 = "bwbpf-search/decoupling/2"
# Version 1 named sum / max of the block costs "ideal_speedup"; version 2 measures speed-up
# against end-to-end BP ("speedup") and keeps the old figure as "block_parallelism". Version 3
# adds the downstream head and infopro loss, an aux head's "min_channels" and "training".
# Version 4 adds "constraints" (the study's, kept by a transfer) and "transfer". Version 5
# names any network (torchvision:NAME, py:MODULE:FUNCTION) with the node each cut follows
# ("backbone.nodes") and what was adapted to the data ("backbone.adapted").
SCHEMA_V1 = "bwbpf-search/decoupling/1"
MAX_DEPTH = 32  # nesting levels; a document needs 5, its metrics a few more


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("bwbpf.spaces").joinpath("decoupling.schema.json").read_text()
    return dict(json.loads(text))


@dataclass(frozen=True)
class Trained:
    """What an exported document says of how its decoupling was found: the search's training
    (the ``training`` section: augmentation and learning-rate schedule) and its BP baseline
    (in ``metrics``: BP's learning rate and validation accuracy). The one place these keys
    are spelled; a document from before one was recorded reads it as None."""

    augment: bool | None = None
    lr_schedule: str | None = None
    bp_lr: float | None = None
    bp_val_accuracy: float | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Trained:
        training, metrics = doc.get("training") or {}, doc.get("metrics") or {}
        return cls(training.get("augment"), training.get("lr_schedule"),
                   metrics.get("bp_lr"), metrics.get("bp_val_accuracy"))

    def training(self) -> dict[str, Any]:
        return {"augment": self.augment, "lr_schedule": self.lr_schedule}

    def metrics(self) -> dict[str, Any]:
        """Its entries of the document's metrics (none without a BP baseline)."""
        if self.bp_lr is None:
            return {}
        return {"bp_val_accuracy": self.bp_val_accuracy, "bp_lr": self.bp_lr}


def to_document(d: Decoupling, *, input: dict[str, Any] | None = None,
                metrics: dict[str, Any] | None = None,
                provenance: dict[str, Any] | None = None,
                training: dict[str, Any] | None = None,
                constraints: dict[str, Any] | None = None,
                transfer: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = get_backbone(d.backbone)
    ranges = d.block_ranges()
    doc: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "backbone": {"name": d.backbone, "family": spec.family, "width": d.width,
                     "units": spec.num_units,
                     **spec.network_record(d.cuts, input)},
    }
    for key, value in (("input", input), ("training", training),
                       ("constraints", constraints), ("transfer", transfer)):
        if value is not None:
            doc[key] = value
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


@dataclass(frozen=True)
class _Constant:
    """NaN, Infinity or -Infinity where JSON wants a number: kept while parsing, so the error
    can name the JSON path it sits at."""

    name: str


def parse_json(text: str, where: str) -> Any:
    """The parsed text; any failure is one ConfigError line naming ``where`` (e.g. the file)."""
    try:
        doc = json.loads(text, parse_constant=_Constant, object_pairs_hook=unique_keys(where))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON (line {e.lineno} column {e.colno}: "
                          f"{e.msg})") from None
    except RecursionError:  # e.g. 100,000 nested "[": the parser gives up before a message
        raise ConfigError(f"{where}: nested too deeply to be a decoupling document") from None
    except ValueError as e:  # an integer beyond Python's digit limit (4,300 by default)
        reason = str(e).split(";")[0]
        raise ConfigError(f"{where}: not a usable JSON document ({reason})") from None
    for path, value, depth in _walk(doc):
        if depth > MAX_DEPTH:  # deep but parseable: later recursive code must not choke on it
            raise ConfigError(f"{where}: {path}: nested deeper than {MAX_DEPTH} levels; not a "
                              "decoupling document")
        if isinstance(value, _Constant):
            raise ConfigError(f"{where}: {path}: {value.name} is not a JSON number")
    return doc


def _walk(doc: Any) -> Iterator[tuple[str, Any, int]]:
    """(JSON path, value, depth) of every value in document order, without recursion."""
    stack: list[tuple[str, Any, int]] = [("$", doc, 0)]
    while stack:
        path, value, depth = stack.pop()
        yield path, value, depth
        if isinstance(value, dict):
            items = [(f"{path}.{k}" if k.isidentifier() else f"{path}[{json.dumps(k)}]", v)
                     for k, v in value.items()]
        elif isinstance(value, list):
            items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend((p, v, depth + 1) for p, v in reversed(items))


def checked_document(doc: Any) -> dict[str, Any]:
    """A parsed document, upgraded to the current version and validated (structure by the
    schema, then the blocks, cuts and backbone); the decoupling is built from it by
    ``spaces.decoupling.from_document``."""
    doc = upgrade(doc)
    _check_schema(doc)
    name = doc["backbone"]["name"]
    blocks, n = doc["blocks"], _check_backbone(doc["backbone"])
    try:
        check_cuts(doc["cuts"]["units"], name, field="cuts.units")
    except ConfigError as err:
        raise ConfigError(f"$.{err}") from None
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
    get_backbone(name).check_nodes(doc["backbone"].get("nodes"), cuts)
    return doc


def _check_backbone(backbone: dict[str, Any]) -> int:
    """The backbone's number of units, after its name, family and units are checked."""
    name = backbone["name"]
    spec = at_path("$.backbone.name", lambda: get_backbone(name))
    if backbone["family"] != spec.family:
        raise ConfigError(f"$.backbone.family: {name} is a {spec.family}, not "
                          f"{backbone['family']}")
    n = spec.num_units
    if backbone.get("units", n) != n:
        raise ConfigError(f"$.backbone.units: {backbone['units']} does not match the backbone; "
                          f"{name} has {n} units")
    return n


def upgrade(doc: Any) -> Any:
    """An older document as the current version. Versions 2 to 4 read as they are (versions
    3 to 5 only added fields and values). Version 1's "ideal_speedup" (sum / max of the block
    costs, not a speed-up over BP) becomes "block_parallelism"; the speed-up over BP is not in
    a version-1 file: export the trial again to get it."""
    if isinstance(doc, dict) and doc.get("schema") in (SCHEMA_V2, SCHEMA_V3, SCHEMA_V4):
        return {**doc, "schema": SCHEMA_ID}
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_V1:
        return doc
    metrics = doc.get("metrics")
    if isinstance(metrics, dict) and "ideal_speedup" in metrics:
        metrics = {("block_parallelism" if k == "ideal_speedup" else k): v
                   for k, v in metrics.items()}
    return {**doc, "schema": SCHEMA_ID, **({"metrics": metrics} if metrics is not None else {})}


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


def at_path(path: str, make: Any) -> Any:
    """Runs ``make``; a ConfigError from it ("field: message") is re-raised under the JSON
    path ("$.blocks[0].aux.field: message")."""
    try:
        return make()
    except ConfigError as e:
        text = str(e)
        head = text.split(":", 1)[0]
        joined = f"{path}.{text}" if head.isidentifier() else f"{path}: {text}"
        raise ConfigError(joined) from None
