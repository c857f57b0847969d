"""The harness's shape as a reader meets it (issue 14): every module of fixtures/ says in its docstring what it
owns, none is over MAX_MODULE_LINES lines and no function over MAX_FUNCTION_LINES - a module or function that
grows past them is a sign that a second concern moved in, and this test names it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*.py") if "__pycache__" not in p.parts)


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_modules_are_small_and_say_what_they_own():
    too_long, undocumented = [], []
    for path in _modules():
        text = path.read_text()
        rel = path.relative_to(FIXTURES.parent)
        n = text.count("\n")
        if n > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {n} lines")
        if text.strip() and not ast.get_docstring(ast.parse(text)):
            undocumented.append(str(rel))
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: " + "; ".join(too_long)
    assert not undocumented, "modules without a docstring saying what they own: " + ", ".join(undocumented)


def test_functions_are_short():
    long = []
    for path in _modules():
        for fn in _functions(ast.parse(path.read_text())):
            n = fn.end_lineno - fn.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(FIXTURES.parent)}:{fn.lineno} {fn.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: " + "; ".join(long)


def test_the_check_can_fail(tmp_path):
    """The measure itself: a long function is seen (so the two tests above can fail)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    tree = ast.parse(f"def f():\n{body}\n")
    (fn,) = list(_functions(tree))
    assert fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES
