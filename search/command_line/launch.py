"""The command this process runs, for another process: `run --jobs` starts its workers and
`train --nproc` its ranks with it. The argv is written from the parsed flags through the
parser's own actions, never from the user's text: what argparse resolved (an abbreviation,
a former name, ``--flag=value``) is what the other process gets, and a flag left out is left
out by its destination, whatever it was typed as."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Collection, Sequence

from bwbpf.search.command_line.parser import build_parser

PROGRAM = (sys.executable, "-m", "bwbpf.search")
NOT_SETTINGS = ("help", "quiet", "command")


def relaunch(args: argparse.Namespace, *, leave_out: Collection[str] = (),
             then: Sequence[str] = (), quiet: bool | None = None) -> list[str]:
    """``python -m bwbpf.search [-q] COMMAND`` with every flag of ``args`` that differs from
    its default, less the destinations in ``leave_out``, then ``then`` (later flags win);
    ``-q`` as ``args`` has it unless ``quiet`` says."""
    q = getattr(args, "quiet", False) if quiet is None else quiet
    return [*PROGRAM, *(["-q"] if q else []), args.command, *flags(args, leave_out), *then]


def flags(args: argparse.Namespace, leave_out: Collection[str] = ()) -> list[str]:
    """The flags that give ``args`` again when parsed, in the parser's order."""
    out: list[str] = []
    seen = {*NOT_SETTINGS, *leave_out}
    for action in _subparser(args.command)._actions:
        if not action.option_strings or action.dest in seen:
            continue
        seen.add(action.dest)  # a former name shares its destination: written once
        value = getattr(args, action.dest, action.default)
        if value is None or value == action.default:
            continue
        out += _written(action, value)
    return out


def _written(action: argparse.Action, value: Any) -> list[str]:
    if isinstance(action, argparse.BooleanOptionalAction):  # --augment / --no-augment
        return [action.option_strings[0 if value else 1]]
    name = max(action.option_strings, key=len)  # --output, not -o
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return [name]
    return [f"{name}={_text(value)}"]


def _text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(_text, value))
    return repr(value) if isinstance(value, float) else str(value)


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices[command]
    return parser
