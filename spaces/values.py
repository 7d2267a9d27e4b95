"""Values read from a file, checked against the type a dataclass field declares, and quoted
in error messages without letting a hostile value grow the message.

``typed(cls, raw, where)`` is what a config read from YAML or JSON goes through before the
dataclass sees it: an ``int`` field takes an integer (not 2.5, not 3.0, not true), a ``float``
field any number but a bool, a ``tuple[X, ...]`` field a list of X, a ``tuple[X, X]`` field a
list of exactly two, a ``Literal`` one of its words, ``X | None`` also null. The first value
that does not fit is a ConfigError naming the field.

Config files are read by ``read_small`` (at most MAX_FILE_BYTES, whatever the file claims:
/dev/zero has size 0), then ``load_yaml`` or ``load_json``: duplicate keys are refused (a silent
"last one wins" hides a typo), and so are more than ``MAX_ALIASES`` YAML aliases (nested
aliases expand to an exponential number of values: the "billion laughs").
"""

from __future__ import annotations

import json
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union

from bwbpf.spaces.errors import ConfigError

MAX_ALIASES = 32  # a hand-written config needs a few; nested ones blow up exponentially
MAX_FILE_BYTES = 1 << 20  # a config file is a few hundred bytes

_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxtuple, _QUOTE.maxdict = 2, 4, 4, 4
_QUOTE.maxstring, _QUOTE.maxother = 60, 60


def quote(value: Any) -> str:
    """``repr(value)`` cut to a few dozen characters and two levels: safe for any value."""
    return _QUOTE.repr(value)


def typed(cls: type, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``raw``'s values checked against ``cls``'s field types (lists become tuples). Messages
    name the field as ``where.field`` when ``where`` is a name, ``where: field`` after a
    file."""
    hints = typing.get_type_hints(cls)
    sep = "." if where.isidentifier() else ": "
    return {k: _check(v, hints[k], f"{where}{sep}{k}") for k, v in raw.items()}


def _check(v: Any, hint: Any, at: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(v, inner, at)
    if origin is Literal:
        if isinstance(v, str) and v in args:
            return v
        raise ConfigError(f"{at}: {quote(v)} is not one of {', '.join(map(str, args))}")
    if origin is tuple:
        return _sequence(v, args, at)
    if hint is bool:
        if isinstance(v, bool):
            return v
        raise ConfigError(f"{at}: {quote(v)} must be true or false")
    if hint is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise ConfigError(f"{at}: {quote(v)} must be a whole number")
    if hint is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v  # as written: the field's own check quotes it, and may normalise it
        raise ConfigError(f"{at}: {quote(v)} must be a number")
    if hint is str:
        if isinstance(v, str):
            return v
        raise ConfigError(f"{at}: {quote(v)} must be a string")
    raise TypeError(f"no check for the field type {hint!r}")  # a new field's type: add one


def _sequence(v: Any, args: tuple[Any, ...], at: str) -> tuple[Any, ...]:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{at}: {quote(v)} must be a list")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_check(x, args[0], f"{at}[{i}]") for i, x in enumerate(v))
    if len(v) != len(args):
        raise ConfigError(f"{at}: {quote(v)} must be a list of {len(args)} values "
                          f"(e.g. [low, high])")
    return tuple(_check(x, a, f"{at}[{i}]") for i, (x, a) in enumerate(zip(v, args)))


def read_small(path: Path, where: str) -> str:
    """The text of a config file, refused past MAX_FILE_BYTES or when it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(f"{where}: larger than {MAX_FILE_BYTES} bytes; a config file is "
                              "a few lines")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read ({e.__class__.__name__})") from None


def unique_keys(where: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """``json.loads``' object hook that refuses a key given twice in one object (JSON itself
    keeps the last silently): space files and decoupling documents alike."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ConfigError(f"{where}: duplicate key {quote(k)}")
            out[k] = v
        return out

    return pairs


def load_json(text: str, where: str) -> Any:
    """``json.loads`` that refuses a key given twice in one object."""
    return json.loads(text, object_pairs_hook=unique_keys(where))


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys and more than MAX_ALIASES aliases."""
    import yaml

    class Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise ConfigError(f"{where}: more than {MAX_ALIASES} YAML aliases; write "
                                      "the values out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, typing.Hashable):
                    continue  # SafeLoader refuses it in a moment ("unhashable key")
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(f"{where}: duplicate key {quote(key)} (line {line})")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
