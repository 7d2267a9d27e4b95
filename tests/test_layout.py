"""The size rules of the packages (STYLE.md): files of at most 300 lines and functions of at
most 40, so that a module stays one idea and a function fits on a screen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p for pkg in ("search", "spaces", "trainers", "reports")
                 for p in (ROOT / pkg).glob("*.py"))
MAX_FILE, MAX_FUNCTION = 300, 40


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_module_keeps_to_the_size_rules(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_FILE
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > MAX_FUNCTION]
    assert long == []


def test_the_rules_see_every_package() -> None:
    assert {p.parent.name for p in MODULES} == {"search", "spaces", "trainers", "reports"}
