"""Settings declared once: a dataclass field made with ``setting`` carries everything the tool
needs to know about it, in its metadata (``Declared``):

- its ``kind``: how a flag's text parses and which values are valid, checked in one place
  (``check``) with one message, by the command line's parser and by the dataclass's own
  ``__post_init__`` (``check_fields``) alike;
- its ``flag``, ``help``, ``metavar`` and ``group``: the command line
  (search.command_line.parser builds every flag of a declared field from them; the default
  shown is the field's);
- ``identity``: part of what a study's trials mean, so a rerun must not change it
  (search.study.settings derives the rerun-conflict check from it);
- ``before``: what a study stored before the setting existed meant (the compatibility reading
  of older studies).

A new setting is one field; nothing else needs editing to parse, check, store, compare or read
it from an older study.
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, Literal, Sequence, get_args

from bwbpf.spaces.decoupling import MAX_LR

KEY = "bwbpf"

Kind = Literal["int>=1", "int>=0", "number>0", "fraction", "seed", "names", "lrs", "choice",
               "bool", "text", "path"]
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds in 0..2**32-1
# What each kind accepts, in words (the command-line reference shows it).
VALUES: dict[str, str] = {
    "int>=1": "integer >= 1", "int>=0": "integer >= 0", "number>0": "number > 0",
    "fraction": "number in (0, 1]", "seed": f"integer 0..{MAX_SEED}",
    "names": "comma-separated names", "lrs": f"comma-separated numbers in (0, {MAX_LR:g}]",
    "choice": "one of the choices", "bool": "on or off", "text": "text",
    "path": "a path (not empty)"}
NOTHING: Any = object()  # ``before``: the setting has always existed


@dataclass(frozen=True)
class Declared:
    help: str = ""
    flag: str | None = None  # "--epochs"; None: not on the command line
    renamed_from: str | None = None  # the flag's former name: still taken, saying the new one
    kind: Kind | None = None  # None: checked by the class itself
    identity: bool = False
    before: Any = NOTHING
    group: str = ""
    metavar: str | None = None
    optional: bool = False  # None (not given) and an empty list are valid values
    options: Callable[[], Sequence[Any]] | None = None  # the valid values, when not a Literal


def setting(default: Any = MISSING, *, factory: Callable[[], Any] | None = None,
            **meta: Any) -> Any:
    """A dataclass field with its declaration (see the module docstring)."""
    md = {KEY: Declared(**meta)}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


def declared(cls: Any) -> list[tuple[Field[Any], Declared]]:
    return [(f, f.metadata[KEY]) for f in fields(cls) if KEY in f.metadata]


def meta(cls: Any, name: str) -> Declared:
    return next(d for f, d in declared(cls) if f.name == name)


def identity(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f, d in declared(cls) if d.identity)


def before(cls: Any) -> dict[str, Any]:
    """What a study stored before each younger setting existed meant."""
    return {f.name: d.before for f, d in declared(cls) if d.before is not NOTHING}


def choices(cls: Any, name: str) -> tuple[Any, ...]:
    """The values a field allows: its declared options, or its Literal annotation's."""
    d = meta(cls, name)
    if d.options is not None:
        return tuple(d.options())
    hint = typing.get_type_hints(cls)[name]
    for arg in (hint, *get_args(hint)):
        if typing.get_origin(arg) is Literal:
            return get_args(arg)
    raise TypeError(f"{cls.__name__}.{name} is not a Literal")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def check(kind: Kind, value: Any, allowed: tuple[Any, ...] = (), shown: str | None = None
          ) -> str | None:
    """Why ``value`` is not a valid ``kind`` (None when it is): the one message for it, with
    the value ``shown`` as the user wrote it when given."""
    why = _why(kind, value, allowed)
    if why is None or shown is None:
        return why
    return why.replace(str(value), shown, 1)


def _why(kind: Kind, value: Any, allowed: tuple[Any, ...]) -> str | None:
    if kind in ("int>=1", "int>=0", "seed"):
        lo = 1 if kind == "int>=1" else 0
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{value!r} is not an integer"
        if value < lo:
            return f"{value} must be >= {lo}"
        if kind == "seed" and value > MAX_SEED:
            return f"{value} must be <= {MAX_SEED}"
    elif kind == "number>0":
        if not (_number(value) and 0 < value < math.inf):
            return f"{value} must be a positive number"
    elif kind == "fraction":
        if not (_number(value) and 0 < value <= 1):
            return f"{value} must be in (0, 1]: a fraction of BP's activation memory"
    elif kind == "lrs":
        if not value or not all(_number(v) and 0 < v <= MAX_LR for v in value):
            return f"{','.join(map(str, value))}: learning rates must be in (0, {MAX_LR:g}]"
    elif kind in ("names", "choice"):
        items = value if kind == "names" else (value,)
        if kind == "names" and not items:
            return "an empty list"
        bad = [v for v in items if allowed and v not in allowed]
        if bad:
            return f"{bad[0]!r} is not one of {', '.join(map(str, allowed))}"
    elif kind == "bool" and not isinstance(value, bool):
        return f"{value!r} must be true or false"
    return None


def check_fields(obj: Any, fail: Callable[[str, str], None]) -> None:
    """Checks every declared field of ``obj`` that has a kind; ``fail(name, why)`` on the
    first that is wrong (None passes where the declaration allows it)."""
    for f, d in declared(type(obj)):
        value = getattr(obj, f.name)
        if d.kind is None or (d.optional and value in (None, ())):
            continue
        allowed = (choices(type(obj), f.name) if d.kind == "choice" or d.options is not None
                   else ())
        why = check(d.kind, value, allowed)
        if why is not None:
            fail(f.name, why)
