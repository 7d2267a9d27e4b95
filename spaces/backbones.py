"""The tool's own backbones, VGG and ResNet, as ordered lists of cuttable units plus a
classifier (``spaces.backbone_spec``), and ``get_backbone``, which also resolves named networks.

A *unit* is the smallest piece a cut may go around: one conv+BN+ReLU (with the max-pool that
follows it) for VGG, the stem or one residual block for ResNet. Every unit declares its output
channels and spatial size, computed by the same code that builds it, so aux heads are sized
from the place the layers come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal

from torch import Tensor, nn

from bwbpf.spaces.backbone_spec import (
    BackboneSpec,
    Family,
    UnitInfo,
    UnitPlan,
    scaled,
)
from bwbpf.spaces.errors import ConfigError
from bwbpf.spaces.registry import Registry


# ---------------------------------------------------------------- VGG
def _vgg_unit(c_in: int, c_out: int, pool: bool) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class VGGSpec(BackboneSpec):
    """VGG from a channel list with 'M' for max-pool (small-image form, 3x3 convs)."""

    name: str
    cfg: tuple[int | str, ...]
    hidden_fc: int = 0  # width of an extra hidden FC layer in the classifier (vgg8b: 1024)
    family: Family = "vgg"

    @property
    def num_units(self) -> int:
        return sum(1 for c in self.cfg if c != "M")

    def _plan(self, width: float, in_channels: int, image_size: tuple[int, int]) -> UnitPlan:
        plan: UnitPlan = []
        c_in, (h, w), stage = in_channels, image_size, 0
        for i, c in enumerate(self.cfg):
            if c == "M":
                continue
            pool = i + 1 < len(self.cfg) and self.cfg[i + 1] == "M"
            # A pool that would empty the map is skipped (28x28 inputs reach 1x1 after 4 pools).
            do_pool = pool and h >= 2 and w >= 2
            if do_pool:
                h, w = h // 2, w // 2
            c_out = scaled(int(c), width)
            info = UnitInfo(len(plan), stage, "conv", c_out, (h, w))
            plan.append((info, partial(_vgg_unit, c_in, c_out, do_pool)))
            stage += int(pool)
            c_in = c_out
        return plan

    def copy_unit(self, info: UnitInfo, c_in: int, in_size: tuple[int, int], width: float,
                  min_channels: int = 0) -> tuple[nn.Module, int]:
        c_out = max(min_channels, scaled(info.channels, width))
        layers = list(_vgg_unit(c_in, c_out, False).children())
        if in_size != info.size:  # the pools of the copied unit and of the units skipped
            layers.append(nn.AdaptiveMaxPool2d(info.size))
        return nn.Sequential(*layers), c_out

    def build_classifier(self, last: UnitInfo, num_classes: int, width: float) -> nn.Module:
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        c = last.channels
        if self.hidden_fc:
            hidden = scaled(self.hidden_fc, width)
            layers += [nn.Linear(c, hidden), nn.ReLU(inplace=True)]
            c = hidden
        layers.append(nn.Linear(c, num_classes))
        return nn.Sequential(*layers)


# ---------------------------------------------------------------- ResNet
class _Residual(nn.Module):
    """A residual unit: ``body`` (its layers, from c_in to c_out channels) plus a shortcut,
    then ReLU."""

    def __init__(self, body: list[nn.Module], c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.relu(self.body(x) + self.shortcut(x))


class BasicBlock(_Residual):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        c_out = planes * self.expansion
        super().__init__([nn.Conv2d(c_in, planes, 3, stride, 1, bias=False),
                          nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                          nn.Conv2d(planes, c_out, 3, 1, 1, bias=False),
                          nn.BatchNorm2d(c_out)], c_in, c_out, stride)


class Bottleneck(_Residual):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        c_out = planes * self.expansion
        super().__init__([nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes),
                          nn.ReLU(inplace=True),
                          nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
                          nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                          nn.Conv2d(planes, c_out, 1, bias=False), nn.BatchNorm2d(c_out)],
                         c_in, c_out, stride)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


def _stem(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)
    )


@dataclass(frozen=True)
class ResNetSpec(BackboneSpec):
    """ResNet in the small-image form: 3x3 stem, no max-pool, four stages (strides 1,2,2,2)."""

    name: str
    block: Literal["basic", "bottleneck"]
    depths: tuple[int, int, int, int]
    family: Family = "resnet"

    @property
    def num_units(self) -> int:
        return 1 + sum(self.depths)

    def _plan(self, width: float, in_channels: int, image_size: tuple[int, int]) -> UnitPlan:
        cls = BasicBlock if self.block == "basic" else Bottleneck
        c, (h, w) = scaled(64, width), image_size
        plan: UnitPlan = [(UnitInfo(0, 0, "stem", c, (h, w)), partial(_stem, in_channels, c))]
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), self.depths), start=1):
            p = scaled(planes, width)
            for j in range(n):
                stride = 2 if stage > 1 and j == 0 else 1
                if stride == 2:  # 3x3 conv, padding 1: ceil(h / 2)
                    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
                c_out = p * cls.expansion
                info = UnitInfo(len(plan), stage, self.block, c_out, (h, w))
                plan.append((info, partial(cls, c, p, stride)))
                c = c_out
        return plan

    def copy_unit(self, info: UnitInfo, c_in: int, in_size: tuple[int, int], width: float,
                  min_channels: int = 0) -> tuple[nn.Module, int]:
        cls = BasicBlock if info.kind == "basic" else Bottleneck
        planes = max(-(-min_channels // cls.expansion), scaled(info.channels // cls.expansion,
                                                                width))
        layers: list[nn.Module] = []
        stride = 1
        if info.size != in_size:  # one stride 2 as the copied unit; earlier skipped ones: pool
            stride = 2
            pre = (2 * info.size[0], 2 * info.size[1])
            if pre[0] < in_size[0] or pre[1] < in_size[1]:
                layers.append(nn.AdaptiveAvgPool2d(pre))
        layers.append(cls(c_in, planes, stride))
        return (layers[0] if len(layers) == 1 else nn.Sequential(*layers)), planes * cls.expansion

    def build_classifier(self, last: UnitInfo, num_classes: int, width: float) -> nn.Module:
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last.channels, num_classes)
        )


BACKBONES: Registry[BackboneSpec] = Registry("backbone")

# PredSim's vgg8b (Nøkland & Eidnes 2019): six convs and a 1024-wide hidden FC. At width 0.25
# it is the small variant fit for CPU trials.
BACKBONES.add("vgg8b", VGGSpec("vgg8b", (128, 256, "M", 256, 512, "M", 512, "M", 512, "M"), 1024))
_VGG = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", *(256,) * 3, "M", *(512,) * 3, "M", *(512,) * 3, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", *(256,) * 4, "M", *(512,) * 4, "M", *(512,) * 4, "M"),
}
for _name, _cfg in _VGG.items():
    BACKBONES.add(_name, VGGSpec(_name, _cfg))
BACKBONES.add("resnet18", ResNetSpec("resnet18", "basic", (2, 2, 2, 2)))
BACKBONES.add("resnet34", ResNetSpec("resnet34", "basic", (3, 4, 6, 3)))
BACKBONES.add("resnet50", ResNetSpec("resnet50", "bottleneck", (3, 4, 6, 3)))
BACKBONES.add("resnet101", ResNetSpec("resnet101", "bottleneck", (3, 4, 23, 3)))
BACKBONES.add("resnet152", ResNetSpec("resnet152", "bottleneck", (3, 8, 36, 3)))


def list_backbones() -> list[str]:
    return BACKBONES.names()


# Networks named by the user (torchvision:NAME, py:MODULE:FUNCTION) resolve through the
# function spaces.graph_backbone registers for their prefixes.
_RESOLVERS: dict[str, Callable[[str], BackboneSpec]] = {}


def add_resolver(prefix: str, resolve: Callable[[str], BackboneSpec]) -> None:
    _RESOLVERS[prefix] = resolve


def get_backbone(name: str) -> BackboneSpec:
    for prefix, resolve in _RESOLVERS.items():
        if isinstance(name, str) and name.startswith(prefix):
            return resolve(name)
    if name in BACKBONES:
        return BACKBONES.get(name)
    raise ConfigError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES.names())}, "
                      "or a network named torchvision:NAME or py:MODULE:FUNCTION")
