"""Transfer that keeps the constraints a decoupling was found under.

The stage rule (spaces.transfer) keeps a decoupling's cuts at the same stages and fractions on
another member of the family. On a deeper net that can break the speed-up it was searched for:
the depth a deeper VGG adds lands in its last block. A document from a constrained study
carries the study's constraints (spaces.limits); carrying it to another backbone or width then
places its cuts so that they hold on the target, judged by the cost model (search.trial.reach: the
target's measured step times, or FLOPs), by this rule:

1. The stage rule's placement, when it meets the constraints.
2. Otherwise, candidates: every cut set of the target (one unit a block at least), with the
   source's heads and optimisers moved by relative position (spaces.transfer.retarget). The
   source's number of blocks K first; when no cut set of K blocks meets the constraints,
   K+1, K-1, K+2, ... (the deeper first) up to K+3 blocks, the first K that has one.
3. Among the candidates of that K that meet every constraint, the one nearest the source's
   relative structure: the least total distance between each cut and the nearest cut of the
   other set, both ways, each cut at its stage plus its fraction of that stage
   (spaces.transfer.positions). Ties go to the better speed-up, then the lesser memory, then
   the shallower cuts.
4. When no candidate meets them, the transfer is refused, naming the best the target reaches.
   ``--ignore-constraints`` keeps the stage rule (and says what it costs).

A document without constraints transfers by the stage rule, as before version 4.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

from bwbpf.search.trial.constraints import NAMES, Constraint, meets
from bwbpf.search.trial.costs import run_cost_model
from bwbpf.search.trial.reach import Pieces, cut_sets
from bwbpf.spaces import Decoupling, UserError, from_document
from bwbpf.spaces.document import Trained, parse_json, to_document
from bwbpf.spaces.input_shape import InputShape
from bwbpf.spaces.limits import CostModel, Limits
from bwbpf.spaces.transfer import check_family, positions, retarget, transfer
from bwbpf.trainers import TrainPlan, resolve_device
from bwbpf.trainers.cost import Ratios
from bwbpf.trainers.timing import StepTimer

Rule = Literal["constraints", "stages"]
MORE_BLOCKS = 3  # the most blocks a transfer adds to the source's K


@dataclass(frozen=True)
class Carried:
    """A decoupling carried to another backbone or width, and what the cost model predicts
    there (None where the input shape is unknown)."""

    source: Decoupling
    decoupling: Decoupling
    stage_cuts: tuple[int, ...]  # where the stage rule puts them
    rule: Rule
    ratios: Ratios | None
    limits: Limits
    cost_model: CostModel

    def line(self) -> str:
        """One line: where the cuts went and what it costs on the target."""
        d, src = self.decoupling, self.source
        head = (f"{src.backbone} x{src.width:g} -> {d.backbone} x{d.width:g}: cuts "
                f"{list(d.cuts)} (K={d.num_blocks}")
        head += ")" if d.cuts == self.stage_cuts else f"; the stage rule: {list(self.stage_cuts)})"
        if self.ratios is None:
            return f"{head}; costs not predicted (the document records no input shape)"
        r, judged = self.ratios, []
        for c in constraints_of(self.limits):
            ok = meets([c], r)
            judged.append(f"{c.flag} {c.limit:g} {'met' if ok else 'BROKEN'}")
        verdict = f" ({', '.join(judged)})" if judged else ""
        return (f"{head}; predicted by {self._model()}: speed-up {r.speedup:.2f}x, memory "
                f"{r.memory_ratio:.2f} of BP's{verdict}")

    def _model(self) -> str:
        return "measured step times" if self.cost_model == "measured" else "FLOPs"

    def section(self) -> dict[str, Any]:
        """The document's ``transfer`` section."""
        out: dict[str, Any] = {"from": {"backbone": self.source.backbone,
                                        "width": self.source.width,
                                        "cuts": list(self.source.cuts)}, "rule": self.rule}
        if self.ratios is not None:
            out.update(speedup=round(self.ratios.speedup, 4),
                       memory_ratio=round(self.ratios.memory_ratio, 4),
                       cost_model=self.cost_model)
        return out

    def document(self, source_doc: dict[str, Any]) -> dict[str, Any]:
        """The carried document: the source's input, training, BP settings, provenance and
        constraints; its accuracy and costs were the source's, so they are not kept (the
        ``transfer`` section has the predicted costs)."""
        return to_document(self.decoupling, input=source_doc.get("input"),
                           metrics=Trained.of(source_doc).metrics(),
                           provenance=source_doc.get("provenance"),
                           training=source_doc.get("training"),
                           constraints=self.limits.section(), transfer=self.section())


def constraints_of(limits: Limits) -> list[Constraint]:
    return [Constraint(n, float(v)) for n in NAMES if (v := getattr(limits, n)) is not None]


def carry(source: Decoupling, limits: Limits, backbone: str, width: float | None = None, *,
          shape: dict[str, Any] | None, timer: StepTimer | None = None,
          ignore: bool = False, ks: Sequence[int] | None = None, min_units: int = 1
          ) -> Carried:
    """``source`` on ``backbone`` (and ``width``) by the module's rule; ``shape`` is the
    input (in_channels, image_size, num_classes) the costs are predicted for, ``timer`` the
    measured step times (FLOPs without one); ``ks`` and ``min_units`` limit the placements
    to a space's (numbers of blocks, least block size). A UserError when no placement meets
    the constraints, unless ``ignore``."""
    check_family(source.backbone, backbone)
    stage = transfer(source, backbone, width)
    model: CostModel = "flops" if timer is None else "measured"
    pieces = None if shape is None else Pieces(backbone, stage.width, timer=timer, **shape)
    if ignore or not limits.any or pieces is None:
        ratios = None if pieces is None else pieces.of(stage)
        return Carried(source, stage, stage.cuts, "stages", ratios, limits, model)
    cons = constraints_of(limits)
    at_stages = pieces.of(stage)
    sizes = [b - a for a, b in stage.block_ranges()]
    if meets(cons, at_stages) and min(sizes) >= min_units and (ks is None
                                                               or stage.num_blocks in ks):
        return Carried(source, stage, stage.cuts, "constraints", at_stages, limits, model)
    tried: list[Ratios] = [at_stages]
    counts = [k for k in block_counts(source.num_blocks, pieces.units) if ks is None or k in ks]
    for k in counts:
        best: tuple[tuple[float, ...], Decoupling, Ratios] | None = None
        for d, r in _placements(source, stage, pieces, k, min_units):
            tried.append(r)
            if meets(cons, r):
                key = (distance(d, source), -r.speedup, r.memory_ratio)
                if best is None or key < best[0]:
                    best = (key, d, r)
        if best is not None:
            return Carried(source, best[1], stage.cuts, "constraints", best[2], limits, model)
    raise UserError(refusal(cons, tried, stage, model, counts))


def block_counts(k: int, units: int) -> list[int]:
    """K, then K+1, K-1, K+2, ...: the source's number of blocks first, the deeper first."""
    ks = [j for j in range(2, min(units, k + MORE_BLOCKS) + 1)]
    return sorted(ks, key=lambda j: (abs(j - k), -j))


def _placements(source: Decoupling, stage: Decoupling, pieces: Pieces, k: int,
                min_units: int) -> Iterator[tuple[Decoupling, Ratios]]:
    for cuts in cut_sets(pieces.units, k, min_units):
        d = retarget(source, stage.backbone, cuts, stage.width)
        yield d, pieces.of(d)


def distance(d: Decoupling, source: Decoupling) -> float:
    """Between the cut sets, both ways: each cut to the nearest cut of the other set, in
    stage positions; then the cuts themselves, so equal distances go to the shallower."""
    ours, theirs = positions(d.backbone, d.cuts), positions(source.backbone, source.cuts)

    def one_way(a: Sequence[float], b: Sequence[float]) -> float:
        return sum(min(abs(x - y) for y in b) for x in a)

    return round(one_way(ours, theirs) + one_way(theirs, ours), 9)


def refusal(cons: Sequence[Constraint], tried: Sequence[Ratios], stage: Decoupling,
            model: CostModel, ks: Sequence[int]) -> str:
    """One line: that no placement on the target meets the constraints, and the best it
    reaches for each (and for memory at the speed-up asked, when both are asked)."""
    best = []
    for c in cons:
        figures = [c.figure(r.speedup, r.memory_ratio) for r in tried]
        top = max(figures) if c.name == "min_speedup" else min(figures)
        best.append(f"{c.shown(top)} ({c.flag} {c.limit:g})")
    if len(cons) == 2:
        fast = [r.memory_ratio for r in tried if meets(cons[:1], r)]
        if fast:
            best.append(f"{min(fast):.2f} of BP's at {cons[0].limit:g}x or more")
    by = "measured step times" if model == "measured" else "FLOPs"
    blocks = f"K {min(ks)} to {max(ks)}" if ks else "no K of the space"
    return (f"transfer to {stage.backbone} x{stage.width:g}: no placement ({blocks}, judged "
            f"by {by}) meets the constraints; at best {', '.join(best)}; "
            f"pass --ignore-constraints to keep the stage rule's cuts {list(stage.cuts)}")


def carry_document(doc: dict[str, Any], backbone: str | None, width: float | None, *,
                   shape: dict[str, Any] | None = None, cost_model: CostModel | None = None,
                   device: str = "auto", batch_size: int = TrainPlan.batch_size,
                   ignore: bool = False) -> Carried:
    """A validated document's decoupling carried to ``backbone`` / ``width`` (the document's
    where not given) under the constraints it carries; the costs predicted for ``shape`` (the
    data's), else for the input the document records, by ``cost_model`` (the document's
    unless given): step times measured here on ``device`` at ``batch_size``, or FLOPs."""
    source = from_document(doc)
    limits = Limits.of(doc)
    model = run_cost_model(cost_model, doc)  # the document's own speed-up, unless told
    if shape is None and (given := InputShape.of(doc)) is not None:
        shape = given.shape()
    timer = None
    if model == "measured" and shape is not None:
        timer = StepTimer(resolve_device(device), batch_size, **shape)
    return carry(source, limits, backbone or source.backbone, width, shape=shape, timer=timer,
                 ignore=ignore)


def carry_arch(args: argparse.Namespace, d: Decoupling, doc: dict[str, Any], out: Path,
               shape: Callable[[], dict[str, Any]]) -> tuple[Decoupling, dict[str, Any] | None]:
    """The file's decoupling on --backbone / --width when they differ from the file's, kept
    within the constraints the file carries (search.winners.carry; its line is printed), and what
    settings.json records of the transfer. A --resume of a transferred run keeps the cuts it
    started with: measured step times differ a little from one timing to the next."""
    if not ((args.backbone and args.backbone != d.backbone)
            or (args.width and args.width != d.width)):
        return d, None
    key = {"from": d.to_dict(), "backbone": args.backbone or d.backbone,
           "width": args.width or d.width, "ignore_constraints": args.ignore_constraints,
           "cost_model": args.cost_model}
    stored = stored_settings(out) if args.resume else {}
    if stored.get("transferred") == key and isinstance(stored.get("decoupling"), dict):
        return Decoupling.from_dict(stored["decoupling"]), key
    limits = Limits.of(doc)
    judged = limits.any and not args.ignore_constraints
    if args.schedule == "distributed" and judged and (args.cost_model
                                                       or limits.cost_model) == "measured":
        raise UserError("--schedule distributed: a transfer judged by measured step times can "
                        "differ between ranks; pass --cost-model flops, or carry the file "
                        "first with `bwbpf-search export --backbone`")
    carried = carry_document(doc, args.backbone, args.width, shape=shape(),
                             cost_model=args.cost_model, device=args.device,
                             batch_size=args.batch_size, ignore=args.ignore_constraints)
    print(carried.line(), file=sys.stderr, flush=True)
    return carried.decoupling, key


def stored_settings(out: Path) -> dict[str, Any]:
    """``out``'s settings.json as stored; empty when there is none (check_out says why one
    cannot be read)."""
    try:
        stored = parse_json((out / "settings.json").read_text(), str(out / "settings.json"))
    except (OSError, UnicodeDecodeError, UserError):
        return {}
    return stored if isinstance(stored, dict) else {}
