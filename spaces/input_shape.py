"""A decoupling document's ``input`` section: the data its decoupling was searched on. The one
place the section's keys are spelled (the schema checks their types)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class InputShape:
    channels: int
    size: tuple[int, int]
    classes: int
    dataset: str | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> InputShape | None:
        """A validated document's section; None for a document written without one."""
        section = doc.get("input")
        if not isinstance(section, Mapping):
            return None
        h, w = section["size"]
        return cls(int(section["channels"]), (int(h), int(w)), int(section["classes"]),
                   section.get("dataset"))

    def section(self) -> dict[str, Any]:
        out: dict[str, Any] = {"channels": self.channels, "size": list(self.size),
                               "classes": self.classes}
        if self.dataset is not None:
            out["dataset"] = self.dataset
        return out

    def shape(self) -> dict[str, Any]:
        """As the cost model and the placer take it."""
        return {"in_channels": self.channels, "image_size": self.size,
                "num_classes": self.classes}


# What the report draws a document without the section on: the shape of CIFAR-10's images, the
# data of the first studies, which recorded none.
ASSUMED = InputShape(3, (32, 32), 10)
