"""A tiny name -> object registry that fails loudly on unknown names."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from bwbpf.spaces.errors import ConfigError, UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries; ``get`` of an unknown name raises ``error`` (a UserError of the
    owner's kind: ConfigError for backbones and heads, DataError for datasets) listing the
    valid ones."""

    def __init__(self, kind: str, *, error: type[UserError] = ConfigError) -> None:
        self.kind, self.error = kind, error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""

        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self._entries)
            raise self.error(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
