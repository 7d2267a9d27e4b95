"""The command-line reference page (``docs/reference/cli.md``), made from the parser itself,
so it lists every subcommand and flag with the default and the values the code accepts.
``make docs`` writes it; a test fails when the committed page and the parser disagree."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bwbpf.search.command_line.parser import DEFAULT_STORAGE, PROG, build_parser

HEADER = f"""# Command-line reference

Every subcommand of `{PROG}` and every flag, with its default and the values it accepts.
This page is generated from the parser (`make reference`); a test keeps the two in step.
Exit status: 0 ok, 2 bad input (one line on stderr), 1 any other failure, 130 after Ctrl-C,
143 after SIGTERM.
"""


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _values(a: argparse.Action) -> str:
    if a.choices is not None:
        return "one of " + ", ".join(f"`{c}`" for c in a.choices)
    if isinstance(a, argparse.BooleanOptionalAction):
        return "on / off"
    if a.nargs == 0:
        return "switch"
    if a.type is None:
        return "text"
    return str(getattr(a.type, "values", getattr(a.type, "__name__", "text")))


def _default(a: argparse.Action) -> str:
    if a.required:
        return "required"
    if a.dest == "storage":  # the environment may change it: the page shows the rule
        return f"`{DEFAULT_STORAGE}` (env `BWBPF_STORAGE`)"
    if a.default in (None, False, argparse.SUPPRESS) or a.nargs == 0:
        return ""
    if isinstance(a.default, (tuple, list)):
        return "`" + ",".join(map(str, a.default)) + "`"
    return f"`{a.default}`"


def _help(a: argparse.Action, prog: str) -> str:
    if not a.help:
        return ""
    # Some Python releases add this to BooleanOptionalAction's help: the page is the same on all
    text = a.help.removesuffix(" (default: %(default)s)")
    return _cell(text % {"default": a.default, "prog": prog})


def _rows(actions: list[argparse.Action], prog: str) -> list[str]:
    rows = []
    for a in actions:
        if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
            continue
        flags = ", ".join(f"`{f}`" for f in a.option_strings)
        rows.append(f"| {flags} | {_cell(_values(a))} | {_default(a)} | {_help(a, prog)} |")
    return rows


def _command(name: str, p: argparse.ArgumentParser, summary: str) -> list[str]:
    out = [f"## {PROG} {name}", "", _cell(summary) + ".", ""]
    for group in p._action_groups:
        rows = _rows(group._group_actions, p.prog)
        if not rows:
            continue
        title = "options" if group.title in ("options", "optional arguments") else group.title
        out += [f"**{_cell(title)}**", "", "| flag | values | default | what it does |",
                "|---|---|---|---|", *rows, ""]
    return out


def cli_reference() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help or "" for c in sub._choices_actions}
    lines = [HEADER, "## Global flags", "", "| flag | values | default | what it does |",
             "|---|---|---|---|", *_rows([a for a in parser._actions if a is not sub], PROG), ""]
    for name, p in sub.choices.items():
        lines += _command(name, p, helps.get(name, ""))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m bwbpf.search.command_line.reference FILE`` writes the page (no FILE:
    standard output)."""
    args = sys.argv[1:] if argv is None else argv
    text = cli_reference()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
