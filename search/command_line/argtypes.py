"""argparse types of the `bwbpf-search` flags: each rejects a bad value with one line that
names it (argparse adds the flag)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, TypeVar

from bwbpf.spaces import ConfigError, SearchSpace, is_named, list_backbones
from bwbpf.spaces.declared import VALUES, Kind, check
from bwbpf.spaces.named_nets import parse_name

F = TypeVar("F", bound=Callable[..., object])


def described(values: str, parse: F) -> F:
    """``parse`` with the words for what it accepts (``values``: the command-line reference
    shows them beside the flag)."""
    setattr(parse, "values", values)
    return parse


def _backbone(text: str) -> str:
    if text in list_backbones():
        return text
    if not is_named(text):
        raise argparse.ArgumentTypeError(
            f"unknown backbone {text!r}; valid: {', '.join(list_backbones())}, or a network "
            "named torchvision:NAME or py:MODULE:FUNCTION")
    try:
        parse_name(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


backbone = described("a registered backbone, torchvision:NAME or py:MODULE:FUNCTION (with "
                     "?key=value&... arguments)", _backbone)


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{v} must be >= {lo}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"{v} must be <= {hi}")
        return v

    return described(f"integer {lo}..{hi}", parse)


def cores() -> int:
    """The cores this process may run on (its CPU affinity), the bound of --jobs and --threads:
    more processes or threads than cores only contend (and libgomp fails on huge counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


JOBS_PER_CORE = 4  # workers may wait on a GPU or a database, but each is a whole interpreter


def per_core(n: int, most_is: str) -> Callable[[str], int]:
    """A positive integer of at most ``n`` per core of this machine; ``most_is`` says what the
    bound is ({most}: its value)."""

    def parse(text: str) -> int:
        v, most = int(positive_int(text)), n * cores()  # type: ignore[call-overload]
        if v > most:
            raise argparse.ArgumentTypeError(f"{v} is more than {most_is.format(most=most)}")
        return v

    most = f"{n} per core of the machine" if n > 1 else "the machine's cores"
    return described(f"integer >= 1, at most {most}", parse)


up_to_cores = per_core(1, "the {most} cores of this machine")
jobs = per_core(JOBS_PER_CORE, "{most} (%d per core of this machine); more machines: the same "
                "command on each, one --storage" % JOBS_PER_CORE)


def path(text: str) -> Path:
    """A file or folder flag: an empty path would mean the current folder, so it is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is an empty path; give a file or folder")
    return Path(text)


described(VALUES["path"], path)


port = int_in(1, 65535)


def space_default(name: str) -> str:
    """A space flag's default as --help shows it: the --space file's, else SearchSpace's."""
    v = getattr(SearchSpace, name)
    text = ",".join(map(str, v)) if isinstance(v, tuple) else "none" if v is None else str(v)
    return f"(default: the --space file's, else {text})"


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def csv(kind: Callable[[str], object]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        items = [t.strip() for t in text.split(",")]
        if not any(items):
            raise argparse.ArgumentTypeError(f"{text!r} is an empty list")
        if not all(items):  # "a,,b" or "a,": a name left out by mistake, not nothing
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item")
        return tuple(kind(t) for t in items)

    return described(f"comma-separated: {getattr(kind, 'values', kind.__name__)}", parse)


def of_kind(kind: Kind, allowed: tuple[object, ...] = ()) -> Callable[[str], object]:
    """The argparse type of a declared setting (spaces.declared): the text parsed as its kind,
    then checked by the setting's one check."""

    def parse(text: str) -> object:
        value: object = text
        if kind in ("int>=1", "int>=0", "seed"):
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        elif kind in ("number>0", "fraction"):
            value = _number(text)
        elif kind == "names":
            value = csv(str)(text)
        elif kind == "lrs":
            value = csv(_number)(text)
        elif kind == "path":
            return path(text)
        why = check(kind, value, allowed, shown=None if kind in ("names", "lrs") else text)
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return value

    of = f" of {', '.join(map(str, allowed))}" if allowed else ""
    return described(VALUES[kind] + of, parse)


# The flags of settings that are not declared fields (train's, export's) check as these kinds.
positive_int = of_kind("int>=1")
positive_float = of_kind("number>0")
fraction = of_kind("fraction")
seed = of_kind("seed")
count = of_kind("int>=0")  # 0 allowed
