"""What a decoupling document promises about its costs: the constraints of the study it was
found in (the ``constraints`` section, schema version 4). A transfer to another backbone or
width keeps them (search.winners.carry); a document without the section (from a study without
constraints, or written before version 4) promises nothing and transfers by the stage rule
alone (spaces.transfer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

CostModel = Literal["measured", "flops"]
# The speed-up a study judges by unless told (SearchSettings.cost_model takes it from here).
DEFAULT_COST_MODEL: CostModel = "measured"


@dataclass(frozen=True)
class Limits:
    """The one place the ``constraints`` section's keys are spelled."""

    min_speedup: float | None = None
    max_memory: float | None = None
    cost_model: CostModel = DEFAULT_COST_MODEL

    @property
    def any(self) -> bool:
        return self.min_speedup is not None or self.max_memory is not None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Limits:
        """The document's (validated) section; none without one."""
        c = doc.get("constraints") or {}
        return cls(c.get("min_speedup"), c.get("max_memory"),
                   c.get("cost_model", DEFAULT_COST_MODEL))

    def section(self) -> dict[str, Any] | None:
        """The document's section; None when there is no constraint to keep."""
        if not self.any:
            return None
        out: dict[str, Any] = {"cost_model": self.cost_model}
        for name in ("min_speedup", "max_memory"):
            if (v := getattr(self, name)) is not None:
                out[name] = v
        return out
