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


def _module_problems(path: Path) -> list[str]:
    """Why one module breaks the shape: too long, no docstring, functions too long."""
    text = path.read_text()
    tree = ast.parse(text)
    out = []
    n = text.count("\n")
    if n > MAX_MODULE_LINES:
        out.append(f"{n} lines (over {MAX_MODULE_LINES})")
    if text.strip() and not ast.get_docstring(tree):
        out.append("no docstring saying what it owns")
    for fn in _functions(tree):
        length = fn.end_lineno - fn.lineno + 1
        if length > MAX_FUNCTION_LINES:
            out.append(f"function {fn.name} (line {fn.lineno}) has {length} lines (over {MAX_FUNCTION_LINES})")
    return out


def test_fixtures_modules_are_small_documented_and_have_short_functions():
    bad = {str(p.relative_to(FIXTURES.parent)): probs for p in _modules() if (probs := _module_problems(p))}
    assert not bad, "\n".join(f"{path}: {'; '.join(probs)}" for path, probs in bad.items())


def test_the_check_can_fail(tmp_path):
    """Each measure sees what it is for (so the test above can fail)."""
    good = tmp_path / "good.py"
    good.write_text('"""Owns nothing."""\n\ndef f():\n    return 1\n')
    assert _module_problems(good) == []
    long_fn = tmp_path / "long_fn.py"
    long_fn.write_text('"""Doc."""\ndef f():\n' + "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES)))
    assert _module_problems(long_fn) == [f"function f (line 2) has {MAX_FUNCTION_LINES + 1} lines (over {MAX_FUNCTION_LINES})"]
    long_mod = tmp_path / "long_mod.py"
    long_mod.write_text('"""Doc."""\n' + "x = 1\n" * MAX_MODULE_LINES)
    assert _module_problems(long_mod) == [f"{MAX_MODULE_LINES + 1} lines (over {MAX_MODULE_LINES})"]
    undocumented = tmp_path / "undocumented.py"
    undocumented.write_text("x = 1\n")
    assert _module_problems(undocumented) == ["no docstring saying what it owns"]
