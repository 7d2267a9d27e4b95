"""A named network (``spaces.named_nets``) as a backbone: its units are the pieces between the
places it may be cut (``spaces.graph_cuts``), its classifier the last piece, from the global
pooling on.

Two rules make the pieces units. A piece with no layer of its own weights but normalisation
(an activation, a pooling, a normalisation, a reshape) joins the unit before it, so a cut never
parts a convolution from its BatchNorm. The classifier starts after the last cut before the
first place the data is a vector (N, F), going back over the pooling and flattening that make
it one. A unit whose output is a token sequence (N, L, D) hands it on as a map (N, D, L, 1)
that the next unit turns back (``spaces.token_maps``), so every aux head reads a map; pooling
over the map is pooling over tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import nn

from bwbpf.spaces.backbone_spec import BackboneSpec, UnitInfo, UnitPlan
from bwbpf.spaces.backbones import add_resolver
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.graph_cuts import child_units, classifier_start, unit_ends
from bwbpf.spaces.named_nets import PREFIXES, adapt, instantiate, parse_name
from bwbpf.spaces.token_maps import as_maps
from bwbpf.spaces.traced_modes import common_cuts, mode_pieces, trace_modes

# Head families that need what a named network cannot give: a copy of a unit at another width
# (downstream), or a 2-D map (spatial kernels, the image decoder).
NOT_ON_NETWORKS = {"downstream": "copies units at another width, which only the tool's own VGG "
                                 "and ResNet can build"}
NOT_ON_TOKENS = {"conv": "3x3 kernels need a feature map (N, C, H, W), not tokens (N, L, D)",
                 "ir": "3x3 kernels need a feature map (N, C, H, W), not tokens (N, L, D)"}
LOSSES_NOT_ON_TOKENS = {"infopro": "its decoder rebuilds the image from a feature map"}


@dataclass(frozen=True)
class Analysis:
    """A named network's units at one input: the node each ends at (a child's index for an
    ``nn.Sequential`` that fx cannot trace) and its output shape, and what was adapted."""

    ends: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    adapted: dict[str, Any] = field(hash=False, compare=False)
    children: bool = False  # cut between an nn.Sequential's children, not in a traced graph


def _built(name: str, in_channels: int, classes: int) -> tuple[nn.Module, dict[str, Any]]:
    # Built on the CPU whatever the default device: a network's own code may compute its
    # layout from tensors (torchvision's RegNet does), which the meta device cannot read.
    with torch.device("cpu"):
        model = instantiate(name)
        return model, adapt(model, in_channels, classes)


@lru_cache(maxsize=32)
def adaptation(name: str, in_channels: int, classes: int) -> dict[str, Any]:
    """What building ``name`` for this data adapts (``named_nets.adapt``)."""
    with torch.random.fork_rng(devices=[]):
        return _built(name, in_channels, classes)[1]


@lru_cache(maxsize=32)
def analyse(name: str, in_channels: int, image_size: tuple[int, int]) -> Analysis:
    # Its own random stream: whether it ran before must not change the weights a seeded
    # build draws next.
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        return _analyse(name, in_channels, image_size)


def _analyse(name: str, in_channels: int, image_size: tuple[int, int]) -> Analysis:
    model, adapted = _built(name, in_channels, 10)
    where, sample = f"backbone {name}", torch.zeros(1, in_channels, *image_size)
    try:
        graphs = trace_modes(model, sample, where)
    except ConfigError as e:
        if not isinstance(model, nn.Sequential) or "cannot be traced" not in str(e):
            raise
        ends, shapes = child_units(model, sample, where)
        a = Analysis(tuple(str(e) for e in ends), tuple(shapes), adapted, children=True)
    else:
        cuts, gm = common_cuts(graphs), graphs["eval"]
        found = unit_ends(gm, cuts, classifier_start(gm, cuts))
        a = Analysis(tuple(e.name for e in found),
                     tuple(tuple(e.meta["tensor_meta"].shape[1:]) for e in found), adapted)
    if len(a.ends) < 2:
        raise ConfigError(f"{where}: found {len(a.ends)} place(s) to cut between the input "
                          "and the classifier; block-wise training needs at least 2 units")
    return a


def _info(k: int, shape: tuple[int, ...], stage: int) -> UnitInfo:
    if len(shape) == 3:
        return UnitInfo(k, stage, "map", shape[0], (shape[1], shape[2]))
    if len(shape) == 2:
        return UnitInfo(k, stage, "tokens", shape[1], (shape[0], 1))
    return UnitInfo(k, stage, "vector", shape[0], (1, 1))


def _stages(shapes: tuple[tuple[int, ...], ...]) -> list[int]:
    """A stage ends where a map's spatial size falls (token units: one stage)."""
    stages, stage = [], 0
    for k, s in enumerate(shapes):
        if k and len(s) == 3 and len(shapes[k - 1]) == 3 and s[1:] < shapes[k - 1][1:]:
            stage += 1
        stages.append(stage)
    return stages


# The input each named network was last built for (the data's): its classifier is cut there.
_LAST_INPUT: dict[str, tuple[int, tuple[int, int]]] = {}


@dataclass(frozen=True)
class GraphSpec(BackboneSpec):
    """A named network as a backbone (``width`` must be 1: a narrower network is the builder's
    own argument, e.g. ``?width_mult=0.5``)."""

    name: str
    family: str  # type: ignore[assignment]
    probe_size: tuple[int, int] = (224, 224)

    @classmethod
    def named(cls, name: str) -> GraphSpec:
        n = parse_name(name)
        size = dict(n.args).get("image_size")
        probe = (size, size) if isinstance(size, int) and 8 <= size <= 1024 else (224, 224)
        return cls(name, n.family, probe)

    def analysis(self, in_channels: int | None = None, image_size: tuple[int, int] | None = None
                 ) -> Analysis:
        """The units at this input. Without one: at the size the network was made for (its
        ``image_size`` argument, else 224x224, else the first of a few small inputs its
        forward pass takes), so what does not depend on the input (the units, their stages,
        the nodes they end at) reads the same whatever the data."""
        if in_channels is not None and image_size is not None:
            a = analyse(self.name, in_channels, (image_size[0], image_size[1]))
            _LAST_INPUT[self.name] = (in_channels, (image_size[0], image_size[1]))
            return a
        first: ConfigError | None = None
        for probe in ((3, self.probe_size), (1, (28, 28)), (3, (32, 32)), (3, (64, 64))):
            try:
                return analyse(self.name, *probe)
            except ConfigError as e:
                first = first or e
        assert first is not None
        raise first

    @property
    def num_units(self) -> int:
        return len(self.analysis().ends)

    def refusal(self, family: str, loss: str, unit: int) -> str | None:
        if family in NOT_ON_NETWORKS:
            return f"the {family} head {NOT_ON_NETWORKS[family]}"
        infos = self.describe()
        if 0 <= unit < len(infos) and infos[unit].kind != "map":
            if family in NOT_ON_TOKENS:
                return f"the {family} head: {NOT_ON_TOKENS[family]}"
            if loss in LOSSES_NOT_ON_TOKENS:
                return f"the {loss} loss: {LOSSES_NOT_ON_TOKENS[loss]}"
        return None

    def check_width(self, width: float) -> None:
        if width != 1.0:
            raise ConfigError(f"width: {self.name} is built as its builder makes it; width must "
                              f"be 1, not {width:g} (pass the builder's own argument instead)")

    def describe(self, *, width: float = 1.0, in_channels: int | None = None,
                 image_size: tuple[int, int] | None = None) -> list[UnitInfo]:
        shapes = self.analysis(in_channels, image_size).shapes
        stages = self.stage_of_units()  # the network's, not those this input's sizes show
        return [_info(k, s, st) for k, (s, st) in enumerate(zip(shapes, stages, strict=True))]

    def stage_of_units(self) -> list[int]:
        return _stages(self.analysis().shapes)

    def _pieces(self, width: float, in_channels: int, image_size: tuple[int, int],
                classes: int = 10) -> list[nn.Module]:
        """Every unit and, last, the classifier, cut from one fresh network (cut on the CPU;
        moved to the meta device when that is the default, as a check that a net fits is)."""
        self.check_width(width)
        a = self.analysis(in_channels, image_size)
        with torch.device("cpu"):
            pieces = self._cut(a, in_channels, image_size, classes)
        if torch.get_default_device().type == "meta":
            return [p.to("meta") for p in pieces]
        return pieces

    def _cut(self, a: Analysis, in_channels: int, image_size: tuple[int, int],
             classes: int) -> list[nn.Module]:
        if a.children:
            model, _ = _built(self.name, in_channels, classes)
            kids, edges = list(model.children()), [-1, *(int(e) for e in a.ends)]
            raw: list[nn.Module] = [nn.Sequential(*kids[i + 1:j + 1])
                                    for i, j in zip(edges, edges[1:])]
            raw.append(nn.Sequential(*kids[edges[-1] + 1:]))
        else:
            model, _ = _built(self.name, in_channels, classes)
            sample = torch.zeros(1, in_channels, *image_size)
            raw = mode_pieces(trace_modes(model, sample, f"backbone {self.name}"),
                              list(a.ends))
        return [as_maps(module, k, a.shapes) for k, module in enumerate(raw)]

    def _plan(self, width: float, in_channels: int, image_size: tuple[int, int]) -> UnitPlan:
        """Each unit with its builder; the builders share one cut of one fresh network, made
        when the first of them is called (the units of one plan are one network's)."""
        infos = self.describe(width=width, in_channels=in_channels, image_size=image_size)
        cut: list[nn.Module] = []

        def builder(k: int) -> Callable[[], nn.Module]:
            def make() -> nn.Module:
                if not cut:
                    cut.extend(self._pieces(width, in_channels, image_size)[:-1])
                return cut[k]
            return make

        return [(info, builder(k)) for k, info in enumerate(infos)]

    def build_classifier(self, last: UnitInfo, num_classes: int, width: float) -> nn.Module:
        channels, size = _LAST_INPUT.get(self.name, (3, self.probe_size))
        return self._pieces(width, channels, size, num_classes)[-1]

    def copy_unit(self, info: UnitInfo, c_in: int, in_size: tuple[int, int], width: float,
                  min_channels: int = 0) -> tuple[nn.Module, int]:
        raise ConfigError(f"family: a downstream head {NOT_ON_NETWORKS['downstream']}; "
                          f"not on {self.name}")

    def unit_nodes(self) -> tuple[str, ...]:
        """The node each unit ends at (a cut after unit k follows node k)."""
        return self.analysis().ends

    def network_record(self, cuts: tuple[int, ...], input: dict[str, Any] | None
                       ) -> dict[str, Any]:
        ends = self.unit_nodes()
        record: dict[str, Any] = {"nodes": [ends[c - 1] for c in cuts]}
        if input is not None:
            record["adapted"] = adaptation(self.name, input["channels"], input["classes"])
        return record

    def check_nodes(self, nodes: list[str] | None, cuts: tuple[int, ...]) -> None:
        if nodes is None:
            return
        ends = self.unit_nodes()
        for k, (node, cut) in enumerate(zip(nodes, cuts, strict=True)):
            if ends[cut - 1] != node:
                where = f"unit {cut - 1} ends at {ends[cut - 1]!r}" if node not in ends else (
                    f"it ends unit {ends.index(node)}, not {cut - 1}")
                raise ConfigError(f"$.backbone.nodes[{k}]: {self.name} no longer has the cut "
                                  f"after node {node!r} ({where})")


@lru_cache(maxsize=64)
def named_spec(name: str) -> GraphSpec:
    return GraphSpec.named(name)


for _prefix in PREFIXES:
    add_resolver(_prefix, named_spec)
