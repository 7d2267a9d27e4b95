"""The size rules of the packages (STYLE.md): files of at most 300 lines and functions of at
most 40, so that a module stays one idea and a function fits on a screen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "spaces", "trainers", "reports")
MODULES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
MAX_FILE, MAX_FUNCTION = 300, 40


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_keeps_to_the_size_rules(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_FILE
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > MAX_FUNCTION]
    assert long == []


def test_the_rules_see_every_package() -> None:
    assert {p.relative_to(ROOT).parts[0] for p in MODULES} == set(PACKAGES)
    assert {p.parent.name for p in MODULES if p.parent.parent.name == "search"} == {
        "command_line", "run", "winners", "trial", "study"}


def _imports_inside_functions(tree: ast.AST) -> list[int]:
    """Lines of the project's own imports that run inside a function (``TYPE_CHECKING`` blocks
    run never and are left out)."""
    lines = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bwbpf")
                        or isinstance(node, ast.Import)
                        and any(a.name.startswith("bwbpf") for a in node.names)):
                    lines.append(node.lineno)
    return lines


ENTRY = ROOT / "search" / "cli.py"


def test_only_the_entry_point_imports_the_project_lazily() -> None:
    """A function-level import hides a cycle or a layer broken. The entry point
    (search/cli.py) is the one place allowed: it loads the rest only after checking what
    makes every command impossible (a closed standard output, a deleted folder)."""
    lazy = {f"{path.relative_to(ROOT)}:{line}" for path in MODULES if path != ENTRY
            for line in _imports_inside_functions(ast.parse(path.read_text(encoding="utf-8")))}
    assert lazy == set()
    assert _imports_inside_functions(ast.parse(ENTRY.read_text(encoding="utf-8")))  # seen


def test_tests_wait_on_conditions_not_fixed_times() -> None:
    """A test polls for what it needs with a deadline (tests/search/conftest.py ``until``);
    a sleep longer than a poll's interval is a fixed wait, too short on a busy machine and
    too long on an idle one."""
    fixed = [f"{path.relative_to(ROOT)}:{node.lineno}"
             for path in sorted((ROOT / "tests").rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr == "sleep" and node.args
             and isinstance(node.args[0], ast.Constant)
             and isinstance(node.args[0].value, (int, float)) and node.args[0].value > 0.5]
    assert fixed == []


def test_one_name_one_meaning() -> None:
    """No two modules of the packages share a base name, and no public function or class is
    defined in two of them (``main`` is the entry point of the command and of the reference
    page's writer)."""
    names = [p.stem for p in MODULES if p.stem != "__init__"]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
    where: dict[str, list[str]] = {}
    for path in MODULES:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert {k: v for k, v in where.items() if len(v) > 1 and k != "main"} == {}
