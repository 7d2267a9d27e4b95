"""Where any traced network may be cut: the places all its data passes through one tensor.

A network is traced with ``torch.fx`` and its nodes are shape-propagated on one sample. A node
is a *cut point* when it carries a single tensor and no other value computed from the input is
still needed after it: every path from the input to the output goes through it, so residual
blocks, dense concatenations, branches and attention stay whole. The pieces between
consecutive cut points are the network's units, each a ``GraphModule`` of one tensor in and one
tensor out that holds the same submodules (the same parameters) as the traced network.
"""

from __future__ import annotations

import contextlib
import io
import operator
import os
import re
import traceback
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from bwbpf.spaces.errors import ConfigError


@dataclass(frozen=True)
class Piece:
    """One piece of a traced network: its nodes' names, in order, the node it ends at and the
    shape of the tensor it returns (batch first)."""

    nodes: tuple[str, ...]
    end: str
    shape: tuple[int, ...]


def trace(model: nn.Module, where: str) -> fx.GraphModule:
    """The network traced by torch.fx; one ConfigError line naming the first operation that
    could not be traced."""
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - tracing user code raises anything; one line
        raise ConfigError(f"{where}: cannot be traced by torch.fx{_operation(e)} "
                          f"({_first_line(e)}); a network that is an nn.Sequential of its "
                          "parts is cut between them") from None


def _operation(e: BaseException) -> str:
    """Where tracing stopped: the last line of the network's own code in the traceback."""
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith(torch_dir) and f.filename != __file__]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {os.path.basename(f.filename)}:{f.lineno} `{(f.line or '').strip()[:80]}`"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def propagate(gm: fx.GraphModule, sample: Tensor, where: str) -> None:
    """Records every node's output shape (``node.meta['tensor_meta']``) from one forward pass
    of ``sample``."""
    try:
        # ShapeProp prints the traceback of a failing node; the one line below says it.
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm.eval()).propagate(sample)
    except Exception as e:  # noqa: BLE001 - the user's forward; one line
        shape = "x".join(str(s) for s in sample.shape)
        node = re.search(r"node=%(\w+)", str(e))
        at = f" at node {node.group(1)}" if node else ""
        raise ConfigError(f"{where}: its forward pass failed on a {shape} input{at} "
                          f"({_first_line(e.__cause__ or e)})") from None


def _single_tensor(node: fx.Node) -> bool:
    """One tensor a head can read: a map (N, C, H, W), tokens (N, L, D) or a vector (N, F)."""
    meta = node.meta.get("tensor_meta")
    return isinstance(meta, TensorMetadata) and 2 <= len(meta.shape) <= 4


def _depends_on_input(graph: fx.Graph) -> set[fx.Node]:
    """The nodes whose value is computed from the network's input (not constants, parameters
    or buffers)."""
    live: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(a in live for a in node.all_input_nodes):
            live.add(node)
    return live


def cut_points(gm: fx.GraphModule) -> list[fx.Node]:
    """The nodes (in order, the input first) after which the data is one tensor, nothing else
    computed from the input is used later and no module with weights is called again: the
    places a cut may go."""
    nodes = list(gm.graph.nodes)
    order = {n: k for k, n in enumerate(nodes)}
    dependent = _depends_on_input(gm.graph)
    last_use = {n: max((order[u] for u in n.users), default=order[n]) for n in nodes}
    shared = _shared_weights(gm, order)
    cuts, open_values = [], set()
    for node in nodes[:-1]:
        k = order[node]
        if node in dependent:
            open_values.add(node)
        open_values = {n for n in open_values if last_use[n] > k}
        if (node in dependent and open_values == {node} and _single_tensor(node)
                and not any(a <= k < b for a, b in shared)):
            cuts.append(node)
    return cuts


def _shared_weights(gm: fx.GraphModule, order: dict[fx.Node, int]) -> list[tuple[int, int]]:
    """(first, last) use of each module or attribute with weights that is used more than once:
    a cut between two uses would share its weights between two blocks."""
    uses: dict[str, list[int]] = {}
    for node, k in order.items():
        if node.op == "call_module":
            if any(True for _ in gm.get_submodule(str(node.target)).parameters()):
                uses.setdefault(str(node.target), []).append(k)
        elif node.op == "get_attr":
            uses.setdefault(str(node.target), []).extend(order[u] for u in node.users)
    return [(min(v), max(v)) for v in uses.values() if len(v) > 1]


def pieces_between(gm: fx.GraphModule, ends: list[fx.Node]) -> list[Piece]:
    """The pieces ending at ``ends`` (cut points, in order; the last one the output's value)."""
    order = {n: k for k, n in enumerate(gm.graph.nodes)}
    pieces, start = [], 0
    for end in ends:
        names = tuple(n.name for n in gm.graph.nodes
                      if start < order[n] <= order[end] and n.op not in ("output", "get_attr"))
        shape = tuple(end.meta["tensor_meta"].shape)
        pieces.append(Piece(names, end.name, shape))
        start = order[end]
    return pieces


def piece_module(gm: fx.GraphModule, piece: Piece, first: str) -> fx.GraphModule:
    """Piece ``piece`` as a module of one tensor in (the value of node ``first``, the end of
    the piece before it) and one out, holding ``gm``'s own submodules. Values the piece uses
    that do not depend on the input (attributes, constants) are computed again inside it."""
    by_name = {n.name: n for n in gm.graph.nodes}
    graph, env = fx.Graph(), {}
    env[by_name[first]] = graph.placeholder("x")

    def bring(node: fx.Node) -> fx.Node:
        if node not in env:
            for arg in node.all_input_nodes:
                bring(arg)
            env[node] = graph.node_copy(node, lambda a: env[a])
        return env[node]

    wanted = set(piece.nodes)
    for node in gm.graph.nodes:
        if node.name in wanted:
            bring(node)
    graph.output(env[by_name[piece.end]])
    return fx.GraphModule(gm, graph, class_name="Unit")


# ------------------------------------------------ which cut points end units
_LIGHT = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d,
          nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
          nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Dropout, nn.Dropout2d, nn.Identity,
          nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d,
          nn.MaxPool2d, nn.Flatten)
_POOL_FUNCTIONS = {"flatten", "mean", "amax", "adaptive_avg_pool2d", "adaptive_max_pool2d",
                   "avg_pool2d", "squeeze", "reshape", "view", "getitem"}
_WEIGHTED_FUNCTIONS = {"conv2d", "linear", "matmul", "bmm", "scaled_dot_product_attention",
                       "einsum"}

def _target_name(node: fx.Node) -> str:
    t = node.target
    if t is operator.getitem:
        return "getitem"
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _is_light(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _LIGHT)
    if node.op in ("call_function", "call_method"):
        return _target_name(node) not in _WEIGHTED_FUNCTIONS
    return True


def _is_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _POOLS)
    return _target_name(node) in _POOL_FUNCTIONS


def classifier_start(gm: fx.GraphModule, cuts: list[fx.Node]) -> int:
    """Index in ``cuts`` of the cut the classifier follows."""
    rank2 = [k for k, c in enumerate(cuts) if len(c.meta["tensor_meta"].shape) <= 2]
    k = (rank2[0] if rank2 else len(cuts)) - 1
    while k > 1 and _is_pool(gm, cuts[k]):
        k -= 1
    return max(k, 1)


def unit_ends(gm: fx.GraphModule, cuts: list[fx.Node], stop: int) -> list[fx.Node]:
    """The cut points that end units: each unit holds a layer with weights."""
    by_name = {n.name: n for n in gm.graph.nodes}
    ends: list[fx.Node] = []
    for piece, end in zip(pieces_between(gm, cuts[1:stop + 1]), cuts[1:stop + 1]):
        weighted = any(not _is_light(gm, by_name[n]) for n in piece.nodes)
        if weighted or not ends:
            ends.append(end)
        else:
            ends[-1] = end
    return ends


# ------------------------------------------------ an nn.Sequential that fx cannot trace
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)


def _light_child(m: nn.Module) -> bool:
    """No weights but normalisation's (an activation, a pooling, a reshape)."""
    return all(isinstance(x, _NORMS) or not any(True for _ in x.parameters(recurse=False))
               for x in m.modules())


def child_units(model: nn.Sequential, sample: Tensor, where: str
                ) -> tuple[list[int], list[tuple[int, ...]]]:
    """An ``nn.Sequential`` cut between its children by the same rules as a traced graph:
    the index of the child each unit ends at, and the unit's output shape (batch left out)."""
    children, shapes, h = list(model.children()), [], sample
    try:
        with torch.no_grad():
            for k, child in enumerate(children):
                h = child.eval()(h)
                if not isinstance(h, Tensor):
                    raise TypeError(f"child {k} returns {type(h).__name__}, not one tensor")
                shapes.append(tuple(h.shape[1:]))
    except Exception as e:  # noqa: BLE001 - the user's forward; one line
        raise ConfigError(f"{where}: its forward pass failed ({_first_line(e)})") from None
    flat = [k for k, s in enumerate(shapes) if len(s) <= 1]
    stop = (flat[0] if flat else len(children)) - 1
    while stop > 0 and isinstance(children[stop], _POOLS):
        stop -= 1
    ends: list[int] = []
    for k in range(stop + 1):
        if ends and _light_child(children[k]):
            ends[-1] = k
        else:
            ends.append(k)
    return ends, [shapes[k] for k in ends]
