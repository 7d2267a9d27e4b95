"""A network traced once per mode. Tracing runs Python once, so whatever a forward decides by
``self.training`` outside a module fx keeps whole (torchvision's stochastic depth, an auxiliary
output in training only) is fixed in the graph at the mode it was traced in. So a network is
traced in training mode and in eval mode; a cut goes only where both graphs allow one, and a
piece whose two graphs differ runs the one of its current mode (as torchvision's feature
extraction does)."""

from __future__ import annotations

from torch import Tensor, fx, nn

from bwbpf.spaces.graph_cuts import cut_points, piece_module, pieces_between, propagate, trace

MODES = ("train", "eval")


def trace_modes(model: nn.Module, sample: Tensor, where: str) -> dict[str, fx.GraphModule]:
    """``model`` traced in each mode, its nodes' shapes recorded from ``sample``."""
    graphs = {}
    was = model.training
    for mode in MODES:
        model.train(mode == "train")
        graphs[mode] = trace(model, where)
        propagate(graphs[mode], sample, where)
    model.train(was)
    return graphs


def common_cuts(graphs: dict[str, fx.GraphModule]) -> list[fx.Node]:
    """The eval graph's cut points that the training graph has too, with the same shape."""
    train = {n.name: n.meta["tensor_meta"].shape for n in cut_points(graphs["train"])}
    return [n for n in cut_points(graphs["eval"])
            if train.get(n.name) == n.meta["tensor_meta"].shape]


class DualPiece(nn.Module):
    """One piece of a network traced in both modes: runs the graph of its current mode. Both
    hold the same submodules, so the piece's parameters are one set."""

    def __init__(self, train: fx.GraphModule, eval: fx.GraphModule) -> None:
        super().__init__()
        self.train_graph, self.eval_graph = train, eval

    def forward(self, x: Tensor) -> Tensor:
        return self.train_graph(x) if self.training else self.eval_graph(x)


def mode_pieces(graphs: dict[str, fx.GraphModule], ends: list[str]) -> list[nn.Module]:
    """The pieces ending at nodes ``ends`` and, last, the rest to the output: one graph where
    both modes trace alike, else a ``DualPiece``."""
    cut: dict[str, list[fx.GraphModule]] = {}
    for mode, gm in graphs.items():
        by_name = {n.name: n for n in gm.graph.nodes}
        output = next(n for n in gm.graph.nodes if n.op == "output").all_input_nodes[0]
        starts = [next(iter(gm.graph.nodes)).name, *ends]
        cut[mode] = [piece_module(gm, piece, starts[k]) for k, piece in
                     enumerate(pieces_between(gm, [by_name[e] for e in ends] + [output]))]
    return [t if t.code == e.code else DualPiece(t, e) for t, e in zip(cut["train"], cut["eval"])]
