"""Named networks: where a traced network may be cut, the units and classifier cut from it,
and the document that records them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from bwbpf.spaces import (
    AuxSpec,
    BlockOptim,
    ConfigError,
    Decoupling,
    SearchSpace,
    build,
    fit_to_networks,
    from_document,
    get_backbone,
    to_document,
    transfer,
)
from bwbpf.spaces.graph_backbone import analyse
from bwbpf.spaces.graph_cuts import cut_points, propagate, trace
from bwbpf.spaces.named_nets import adapt, instantiate, parse_name

VIT = ("torchvision:VisionTransformer?image_size=16&patch_size=4&num_layers=2&num_heads=2"
       "&hidden_dim=16&mlp_dim=32")
# The torchvision families the tests and the evidence use, at small sizes.
FAMILIES = ["torchvision:mobilenet_v3_small", "torchvision:efficientnet_b0",
            "torchvision:regnet_y_400mf", VIT]


class Hand(nn.Module):
    """A skip connection, a dense concatenation and a branch that joins again."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.dense = nn.Conv2d(4, 4, 3, padding=1)
        self.left, self.right = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)
        self.out = nn.Conv2d(4, 6, 3, padding=1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        y = x + self.b(torch.relu(self.a(x)))  # skip
        z = torch.cat([y, self.dense(y)], 1)  # dense
        w = self.left(z) * torch.sigmoid(self.right(z))  # branch
        v = torch.relu(self.out(w))
        return self.fc(torch.flatten(self.pool(v), 1))


def hand_module(folder: Path, name: str) -> str:
    """Hand as a user's module ``name`` in ``folder``: py:name:make."""
    source = Path(__file__).read_text().split("class Hand(nn.Module):")[1].split("\n\n\n")[0]
    (folder / f"{name}.py").write_text(
        "import torch\nfrom torch import Tensor, nn\n\n\nclass Hand(nn.Module):" + source
        + "\n\n\ndef make(**kw):\n    return Hand()\n")
    return f"py:{name}:make"


def test_the_cut_points_are_exactly_where_one_tensor_carries_the_data() -> None:
    gm = trace(Hand(), "hand")
    propagate(gm, torch.zeros(2, 3, 8, 8), "hand")
    names = [n.name for n in cut_points(gm)]
    # Not inside the skip (a, relu, b), the dense block (dense) or the branch (left, right,
    # sigmoid): each leaves another value still needed.
    assert names == ["x", "stem", "add", "cat", "mul", "out", "relu_1", "pool", "flatten", "fc"]


def test_units_hold_weights_and_the_classifier_starts_at_the_pooling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = get_backbone(hand_module(tmp_path, "hand_units"))
    # out's ReLU joins out's unit; pool, flatten and fc are the classifier.
    assert spec.unit_nodes() == ("stem", "add", "cat", "mul", "relu_1")
    infos = spec.describe(in_channels=3, image_size=(8, 8))
    assert [(i.channels, i.size) for i in infos] == [(4, (8, 8)), (4, (8, 8)), (8, (8, 8)),
                                                     (4, (8, 8)), (6, (8, 8))]


def _same_weights(name: str, in_channels: int, classes: int, size: int
                  ) -> tuple[nn.Module, list[nn.Module], nn.Module]:
    spec = get_backbone(name)
    torch.manual_seed(0)
    original = instantiate(name)
    adapt(original, in_channels, classes)
    torch.manual_seed(0)
    _, units = spec.build_units(in_channels=in_channels, image_size=(size, size))
    torch.manual_seed(0)
    classifier = spec.build_classifier(spec.describe()[-1], classes, 1.0)
    return original, units, classifier


@pytest.mark.integration  # torchvision networks
@pytest.mark.parametrize("name", FAMILIES)
def test_the_units_compose_to_the_untouched_network(name: str) -> None:
    """No cut: the units then the classifier compute what the network itself computes, on the
    same weights (3 channels and 1,000 classes: nothing adapted), unit shapes as described."""
    original, units, classifier = _same_weights(name, 3, 1000, 16)
    infos = get_backbone(name).describe(in_channels=3, image_size=(16, 16))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        h = x
        for unit, info in zip(units, infos):
            h = unit.eval()(h)
            assert tuple(h.shape[1:]) == (info.channels, *info.size)
        out = classifier.eval()(h)
        assert torch.allclose(out, original.eval()(x), atol=1e-5)


@pytest.mark.integration  # torchvision networks
@pytest.mark.parametrize("name", FAMILIES)
def test_a_net_builds_on_the_meta_device_as_train_checks_it(name: str) -> None:
    """``train`` first builds every net on the meta device (without memory); a network whose
    own code reads tensors while it is made (RegNet computes its widths with them) is still
    analysed and cut, and the net's weights are all on the meta device."""
    analyse.cache_clear()
    with torch.device("meta"):
        net = build(Decoupling.paper_default(name, k=2), 10, 1, 16)
    weights = list(net.parameters())
    assert weights and all(w.is_meta for w in weights)


def test_the_first_conv_and_last_linear_are_adapted_to_the_data() -> None:
    original, units, classifier = _same_weights("torchvision:mobilenet_v3_small", 1, 7, 16)
    with torch.no_grad():
        h = torch.randn(2, 1, 16, 16)
        for unit in units:
            h = unit.eval()(h)
        assert classifier.eval()(h).shape == (2, 7)
    doc = to_document(Decoupling.uniform("torchvision:mobilenet_v3_small", k=3),
                      input={"channels": 1, "size": [16, 16], "classes": 7})
    assert doc["backbone"]["adapted"] == {"first_conv": ["features.0.0", 3, 1],
                                          "batchnorm_momentum": [34, 0.01, 0.1],
                                          "last_linear": ["classifier.3", 1000, 7]}


def test_a_vision_transformer_hands_tokens_on_as_maps_and_refuses_spatial_heads() -> None:
    infos = get_backbone(VIT).describe(in_channels=3, image_size=(16, 16))
    assert {i.kind for i in infos} == {"tokens"} and infos[0].size == (17, 1)
    d = Decoupling(VIT, (2,), (AuxSpec("linear"),), (BlockOptim(),) * 2)
    net = build(d, 10, 3, 16, seed=0)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"aux\[0\]: the conv head: 3x3 kernels need a feature"):
        Decoupling(VIT, (2,), (AuxSpec("conv"),), (BlockOptim(),) * 2)
    with pytest.raises(ConfigError, match="the infopro loss"):
        Decoupling(VIT, (2,), (AuxSpec("linear", loss="infopro"),), (BlockOptim(),) * 2)


def test_a_document_names_the_nodes_and_refuses_a_network_that_lost_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = hand_module(tmp_path, "hand_doc")
    d = Decoupling(name, (2, 4), (AuxSpec("linear"),) * 2, (BlockOptim(),) * 3)
    doc = to_document(d)
    assert doc["backbone"]["nodes"] == ["add", "mul"]
    assert from_document(doc) == d
    doc["backbone"]["nodes"][1] = "relu"
    with pytest.raises(ConfigError, match=r"^\$\.backbone\.nodes\[1\]: .* no longer has the "
                                          r"cut after node 'relu'"):
        from_document(doc)


def test_an_untraceable_sequential_is_cut_between_its_children(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "seqnet.py").write_text(
        "from torch import nn\n\nclass Loop(nn.Module):\n"
        "    def forward(self, x):\n        if x.sum() > 0:  # data-dependent: fx cannot trace\n"
        "            return x\n        return -x\n\n"
        "def make():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Loop(),"
        " nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.AdaptiveAvgPool2d(1),"
        " nn.Flatten(), nn.Linear(8, 3))\n")
    monkeypatch.chdir(tmp_path)
    spec = get_backbone("py:seqnet:make")
    assert spec.unit_nodes() == ("2", "4", "5")
    net = build(Decoupling("py:seqnet:make", (1,), (AuxSpec("linear"),), (BlockOptim(),) * 2),
                3, 3, 12, seed=0)
    assert net(torch.randn(2, 3, 12, 12)).shape == (2, 3)


@pytest.mark.parametrize(("name", "message"), [
    ("torchvision:no_such_net", r"torchvision has no classification model 'no_such_net'"),
    ("py:no_such_module:make", r"module 'no_such_module' does not import"),
    ("py:os:getcwd", r"py:os:getcwd: getcwd returned a str, not an nn\.Module"),
    ("torchvision:resnet18?depth", r"'depth' is not key=value"),
])
def test_bad_names_are_one_line(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_backbone(name).num_units


def test_a_network_that_cannot_be_traced_and_is_not_sequential_names_the_operation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "branchy.py").write_text(
        "from torch import nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.c = nn.Conv2d(3, 4, 3)\n"
        "    def forward(self, x):\n        if x.mean() > 0:\n            x = -x\n"
        "        return self.c(x)\n\ndef make():\n    return Net()\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"cannot be traced by torch\.fx at branchy\.py:8 "
                                          r"`if x\.mean\(\) > 0:` \(TraceError: symbolically "
                                          r"traced variables cannot be used as inputs to "
                                          r"control flow\)"):
        get_backbone("py:branchy:make").num_units
    assert "branchy" in sys.modules  # imported from the current folder


def test_parse_name_reads_literals() -> None:
    n = parse_name("torchvision:vit_b_16?image_size=32&dropout=0.1&name=x")
    assert dict(n.args) == {"image_size": 32, "dropout": 0.1, "name": "x"}
    assert n.family == "torchvision:vit"
    assert parse_name("torchvision:efficientnet_b3").family == "torchvision:efficientnet"


def test_transfer_keeps_to_a_torchvision_family() -> None:
    b0 = Decoupling.paper_default("torchvision:efficientnet_b0")
    b1 = transfer(b0, "torchvision:efficientnet_b1")
    assert b1.relative_cuts() == b0.relative_cuts()  # the same stages and fractions
    assert b1.cuts != b0.cuts and b1.backbone == "torchvision:efficientnet_b1"
    with pytest.raises(ConfigError, match=r"cannot transfer a torchvision:efficientnet "
                                          r"decoupling .* \(torchvision:resnet\); same family"):
        transfer(b0, "torchvision:resnet18")
    with pytest.raises(ConfigError, match="width must be 1, not 0.5"):
        transfer(b0, "torchvision:efficientnet_b1", 0.5)


@pytest.mark.integration  # torchvision networks
def test_what_a_forward_decides_by_its_mode_follows_the_mode() -> None:
    """EfficientNet's stochastic depth drops residual rows in training only: traced once, the
    decision would be fixed at the mode of the trace."""
    name = "torchvision:efficientnet_b0?stochastic_depth_prob=0.9"
    net = build(Decoupling.uniform(name, k=2, width=1.0), 10, 3, 16, seed=0)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x), net(x))
        net.train()
        torch.manual_seed(1)
        first = net(x)
        torch.manual_seed(2)
        assert not torch.equal(first, net(x))


def test_a_space_over_a_transformer_drops_what_cannot_sit_on_tokens(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bwbpf.spaces.space")
    base = SearchSpace()
    fields = fit_to_networks({**base.__dict__, "backbones": (VIT,)}, {"backbones"})
    assert fields["width"] == 1.0  # none given: a named network is built as made
    assert set(fields["heads"]) == set(base.heads) - {"conv", "ir", "downstream"}
    assert set(fields["losses"]) == set(base.losses) - {"infopro"}
    assert sum("not proposed" in r.message for r in caplog.records) == 4
    SearchSpace.from_mapping(fields, where="search space")  # a valid space
    with pytest.raises(ConfigError, match="width must be 1, not 0.5"):
        fit_to_networks({**base.__dict__, "backbones": (VIT,), "width": 0.5},
                        {"backbones", "width"})
