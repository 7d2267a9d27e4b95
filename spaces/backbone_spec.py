"""What every backbone is: an ordered list of cuttable units plus a classifier
(``BackboneSpec``), each unit described by ``UnitInfo``. The tool's own VGG and ResNet
(``spaces.backbones``) and the networks a user names (``spaces.graph_backbone``) implement it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Literal

from torch import nn

Family = Literal["vgg", "resnet"]
UnitPlan = list[tuple["UnitInfo", Callable[[], nn.Module]]]


@dataclass(frozen=True)
class UnitInfo:
    index: int
    stage: int  # VGG: pooling group (0-based); ResNet: 0 = stem, 1..4 residual stages
    kind: str  # "conv", "stem", "basic", "bottleneck"
    channels: int  # output channels
    size: tuple[int, int]  # output spatial size (H, W)


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier (never below 4, so tiny widths still build)."""
    return max(4, int(round(channels * width)))


class BackboneSpec(abc.ABC):
    """A registered backbone: architecture as data, plus how to turn it into units."""

    name: str
    family: Family

    @property
    @abc.abstractmethod
    def num_units(self) -> int: ...

    @abc.abstractmethod
    def _plan(self, width: float, in_channels: int, image_size: tuple[int, int]) -> UnitPlan: ...

    @abc.abstractmethod
    def build_classifier(self, last: UnitInfo, num_classes: int, width: float) -> nn.Module: ...

    def describe(
        self, *, width: float = 1.0, in_channels: int = 3, image_size: tuple[int, int] = (32, 32)
    ) -> list[UnitInfo]:
        return [info for info, _ in self._plan(width, in_channels, image_size)]

    def build_units(
        self, *, width: float = 1.0, in_channels: int = 3, image_size: tuple[int, int] = (32, 32)
    ) -> tuple[list[UnitInfo], list[nn.Module]]:
        plan = self._plan(width, in_channels, image_size)
        return [info for info, _ in plan], [make() for _, make in plan]

    def build_some_units(
        self, indices: list[int], *, width: float = 1.0, in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32)
    ) -> list[nn.Module]:
        """Fresh units ``indices`` of the net, each exactly like the net's own (same shapes, so
        a copy can track the original's weights: a ``momentum`` aux head)."""
        plan = self._plan(width, in_channels, image_size)
        return [plan[i][1]() for i in indices]

    @abc.abstractmethod
    def copy_unit(self, info: UnitInfo, c_in: int, in_size: tuple[int, int], width: float,
                  min_channels: int = 0) -> tuple[nn.Module, int]:
        """A fresh unit like ``info`` (a ``downstream`` aux head's layer): same kind, its output
        channels times ``width`` (at least ``min_channels``) and its output size, on an input
        of ``c_in`` channels and ``in_size``. Returns (module, output channels)."""

    def stage_of_units(self) -> list[int]:
        """Stage index of each unit (independent of width and resolution)."""
        return [u.stage for u in self.describe()]

    def check_width(self, width: float) -> None:
        """A ConfigError where the backbone cannot be built at ``width`` (every width builds
        the tool's own backbones)."""

    def network_record(self, cuts: tuple[int, ...], input: dict[str, Any] | None
                       ) -> dict[str, Any]:
        """What a document's ``backbone`` section says of the network beyond its name (a
        named network: the node each cut follows and, given the document's ``input``, what
        was adapted to the data)."""
        return {}

    def check_nodes(self, nodes: list[str] | None, cuts: tuple[int, ...]) -> None:
        """A ConfigError where the network no longer has ``nodes`` after ``cuts``."""

    def refusal(self, family: str, loss: str, unit: int) -> str | None:
        """Why an aux head of ``family`` with ``loss`` cannot sit after unit ``unit``; None
        where it can (everywhere on the tool's own backbones)."""
        return None


def stage_boundaries(stages: list[int]) -> list[int]:
    """Unit indices that start a new stage: the cuts that sit at stage boundaries."""
    return [i for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
