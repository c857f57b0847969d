"""The HTML report stays readable at the size of a real run (issue 13): rows other than failures fold
(pytest-html's render_collapsed), the row data of a large run is stored compressed and inflated by the
browser (nothing dropped), and pytest-html's Environment table names the vLLM under test, its commit and
the GPUs (through pytest-metadata's hook). Real pytest subprocesses, real headless Chromium."""

from __future__ import annotations

import base64
import gzip
import html
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = '''
def pytest_configure(config):
    for m in ("parser", "server", "gpu", "bench", "harness"):
        config.addinivalue_line("markers", m + ": tier")
'''

# Many rows with tracebacks and diffs: the shape of a CPU run, smaller.
MANY = '''
import pytest
from fixtures import report

@pytest.mark.parser
@pytest.mark.parametrize("i", range(300))
def test_ok(i):
    pass

@pytest.mark.parser
@pytest.mark.parametrize("i", range(120))
def test_known(i, request):
    report.record_golden_diff(request, f"case-{i}", "minimax_m2", "stream",
        {"content": "<think>a</think>", "n": i}, {"content": "<think>a", "n": i})
    pytest.xfail(f"known: think-end-swallowed (case-{i})")

@pytest.mark.parser
def test_broken(request):
    report.record_golden_diff(request, "broken-case", "minimax_m2", "nonstream", {"a": 1}, {"a": 2})
    assert False, "UNIQUE-FAILURE-MARKER"
'''


def _run(tmp_path: Path, *args: str, env_extra: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nxfail_strict = true\nrender_collapsed = passed,xfailed,skipped\n")
    (tmp_path / "test_many.py").write_text(textwrap.dedent(MANY))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(env_extra or {})
    out = tmp_path / "reports"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "fixtures.report", "-p", "no:cacheprovider",
                           f"--report-dir={out}", "-q", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert (out / "report.html").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out / "report.html"


def _blob(page: str) -> dict:
    m = re.search(r'data-jsonblob="([^"]*)"', page)
    if m:
        return json.loads(html.unescape(m.group(1)))
    m = re.search(r'data-jsonblob-gz="([^"]*)"', page)
    assert m, "no row data in the page"
    return json.loads(gzip.decompress(base64.b64decode(m.group(1))))


def _chromium() -> str:
    for c in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if c and shutil.which(c):
            return shutil.which(c)
    pytest.fail("chromium is not installed: run scripts/setup-browser.sh", pytrace=False)


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=20000"]  # lets the page inflate its rows before the DOM is taken


def test_project_folds_everything_but_failures():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    folded = {x.strip() for x in ini["render_collapsed"].split(",")}
    assert folded == {"passed", "xfailed", "skipped"}


def test_environment_table_names_vllm_commit_and_gpus(tmp_path):
    _, page_path = _run(tmp_path, "-k", "test_ok and 1", env_extra={"MINIMAX_REPORT_COMPRESS_ABOVE": "100000000"})
    page = page_path.read_text()
    env = _blob(page)["environment"]
    for key in ("vLLM", "vLLM commit", "GPUs", "GPU driver", "run id"):
        assert key in env, (key, env)
    from fixtures.report import environment

    want = environment()["vllm"]["version"]
    assert env["vLLM"].startswith(want), env["vLLM"]
    gate = json.loads((page_path.parent / "gate.json").read_text())
    assert env["run id"] == gate["run_id"]


def test_large_report_is_compressed_and_renders_every_row(tmp_path):
    proc, page_path = _run(tmp_path, env_extra={"MINIMAX_REPORT_COMPRESS_ABOVE": "0"})
    assert proc.returncode == 1, proc.stdout[-3000:]
    page = page_path.read_text()
    assert 'data-jsonblob-gz="' in page and 'data-jsonblob="' not in page
    data = _blob(page)
    rows = [t for v in data["tests"].values() for t in v]
    assert len(rows) == 300 + 120 + 1
    assert data["renderCollapsed"] == ["passed", "xfailed", "skipped"]
    known = [t for t in rows if t["result"] == "XFailed"]
    # nothing dropped: every expected failure keeps its reason, traceback and diff
    assert all("think-end-swallowed" in t["log"] and "test_many.py" in t["log"] for t in known)
    assert all(any("mm-golden-diff" in e["content"] for e in t["extras"]) for t in known)
    assert not any("<style>" in e["content"] for t in rows for e in t["extras"]), "style repeated per row"
    # the bottom section does not repeat the 120 known diffs
    assert page.count('class="mm-golden-diff"') == 1  # the one failure, outside the compressed rows
    assert 'id="mm-known-deviations"' in page

    exe = _chromium()
    dom = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          page_path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "data-mm-inflated=" in dom, dom[-2000:]
    assert dom.count('class="results-table-row') >= 421
    assert "UNIQUE-FAILURE-MARKER" in dom and "known: think-end-swallowed (case-119)" in dom
    assert '<p id="mm-inflate-error"' not in dom
    # folded: expected failures and passes render collapsed, the failure open
    row = re.search(r'<tbody class="results-table-row failed"[^>]*>(.*?)</tbody>', dom, re.S)
    assert row and '<tr class="extras-row">' in row.group(1), "the failure's details are not open"
    assert dom.count('<tr class="extras-row hidden"') == 420  # 300 passed + 120 expected failures folded


def test_what_changed_comes_first_with_compare_with(tmp_path):
    _, first = _run(tmp_path / "a", "-k", "test_ok and 1")
    old = tmp_path / "old-gate.json"
    old.write_text(first.with_name("gate.json").read_text())
    _, page_path = _run(tmp_path / "b", "-k", "test_ok and 2 or test_broken", f"--compare-with={old}")
    page = page_path.read_text()
    where = {a: page.find(f'id="{a}"') for a in ("mm-verdict-banner", "mm-comparison", "mm-env", "mm-gates")}
    assert all(v > 0 for v in where.values()), where
    assert where["mm-verdict-banner"] < where["mm-comparison"] < where["mm-env"] < where["mm-gates"], where
