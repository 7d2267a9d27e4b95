"""`bwbpf-search backbones`: the units of a backbone, as the search cuts it."""

from __future__ import annotations

import argparse

from torch import nn

from bwbpf.spaces import SearchSpace, get_backbone, list_backbones
from bwbpf.spaces.graph_backbone import GraphSpec
from bwbpf.trainers.cost import unit_probes


def unit_rows(name: str, channels: int, size: tuple[int, int]
              ) -> list[tuple[int, str, str, int, int]]:
    """(index, the node the unit ends at, output shape, parameters, forward+backward FLOPs
    per image) of every unit of backbone ``name`` on ``channels`` x ``size`` images (the
    tool's own backbones at the search's default width)."""
    spec = get_backbone(name)
    width = 1.0 if isinstance(spec, GraphSpec) else SearchSpace.width  # the search's
    infos, units = spec.build_units(width=width, in_channels=channels, image_size=size)
    nodes = (spec.unit_nodes() if isinstance(spec, GraphSpec)
             else tuple(f"{i.kind} {i.index}" for i in infos))
    probes = unit_probes(name, width=width, in_channels=channels, image_size=size)
    return [(i.index, node, _shape(i), _params(u), flops)
            for i, node, u, (flops, _) in zip(infos, nodes, units, probes)]


def _shape(i: object) -> str:
    kind, c, (h, w) = getattr(i, "kind"), getattr(i, "channels"), getattr(i, "size")
    return f"{h}x{c} tokens" if kind == "tokens" else f"{c}x{h}x{w}"


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cmd_backbones(args: argparse.Namespace) -> int:
    if args.name is None:
        print("registered:", ", ".join(list_backbones()))
        print("and any network named torchvision:NAME or py:MODULE:FUNCTION (?key=value&...)")
        return 0
    size = (args.image_size, args.image_size)
    rows = unit_rows(args.name, args.channels, size)
    print(f"{args.name}: {len(rows)} units on {args.channels}x{size[0]}x{size[1]} images "
          "(a cut may follow any unit but the last; FLOPs: forward + backward)")
    print(f"{'unit':>4}  {'ends at node':<40} {'output':>16} {'params':>10} "
          f"{'train MFLOPs/img':>17}")
    for k, node, shape, params, flops in rows:
        print(f"{k:>4}  {node:<40} {shape:>16} {params:>10,} {flops / 1e6:>17.2f}")
    return 0
