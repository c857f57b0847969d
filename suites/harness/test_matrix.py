"""Behaviour across vLLM releases (fixtures.matrix) and the standalone repro per finding (fixtures.repro).

The matrix is built from real observations.json files of two real parser-tier runs (vLLM 0.26.0 and
0.33.0, `-k "unknown-tool or basic-weather-single-invoke or reasoning-only-no-think-end"`, kept in
suites/harness/data/matrix/ with the known records they were judged against, so the expectations below do
not move when golden/known is updated). The repro script is generated from golden/known and run in a
subprocess against the installed vLLM with the suite's built-in tokenizer.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import known, repro
from fixtures.matrix import bisect as matrix_bisect
from fixtures.matrix import installs as matrix_installs
from fixtures.matrix import page as matrix_page
from fixtures.matrix import table as matrix_table

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data" / "matrix"
OLD, NEW = "0.26.0", "0.33.0"


@pytest.fixture(scope="module")
def built() -> dict:
    registry = known.load_registry()
    records = known.load_records(DATA / "known")
    runs = []
    for v in (NEW, OLD):  # given out of order: build_matrix keeps the order it is given, main sorts
        runs.append({"spec": v, "version": v, "status": "ran",
                     "observations": json.loads((DATA / f"observations-{v}.json").read_text()),
                     "gate": json.loads((DATA / f"gate-{v}.json").read_text())})
    runs.sort(key=lambda r: known.version_key(r["version"]))
    return matrix_table.build_matrix(runs, registry, records)


def _row(m: dict, fid: str) -> dict:
    return next(r for r in m["findings"] if r["id"] == fid)


def test_versions_carry_the_runs_verdicts_and_rejudge_them_alike(built):
    versions = {v["label"]: v for v in built["versions"]}
    assert list(versions) == [OLD, NEW]
    for v, entry in versions.items():
        gate = json.loads((DATA / f"gate-{v}.json").read_text())
        assert entry["gate_verdict"] == gate["verdict"]
        # judged again against the same records, every cell gets the verdict the run gave it
        assert entry["rejudged_differently"] == []
        counts = entry["verdicts"]
        assert counts["known"] == gate["gates"]["parser"]["known"]
        assert counts["new"] + counts["changed"] == gate["gates"]["parser"]["new"] + gate["gates"]["parser"]["changed"]
        assert entry["cells"] == sum(counts.values())
    assert versions[NEW]["gate_verdict"] == "pass" and versions[OLD]["gate_verdict"] == "fail"


def test_findings_rows_count_cells_per_version(built):
    think = _row(built, "think-end-swallowed")
    assert think["first_seen"] == OLD and think["last_seen"] == NEW and think["in_latest"]
    assert think["seen_on"] == [OLD, NEW]
    for v in (OLD, NEW):
        pv = think["per_version"][v]
        assert pv["known"] >= 2 and pv["cells"] == sum(pv[k] for k in matrix_table.COUNTED)
    # unknown-tool-dropped: recorded on 0.32.0; 0.26.0 shows it, but one cell deviates otherwise
    unknown = _row(built, "unknown-tool-dropped")
    assert unknown["per_version"][OLD]["changed"] >= 1 and unknown["per_version"][NEW]["changed"] == 0
    assert unknown["per_version"][NEW]["known"] >= 1
    # a server-only finding is not observable by the parser tier: a dash, never "fixed"
    tag = _row(built, "structural-tag-rejects-think-gap")
    assert not tag["observable"] and tag["seen_on"] == [] and tag["first_seen"] is None
    assert all(pv["cells"] == 0 for pv in tag["per_version"].values())
    # what 0.26.0 does where nothing is recorded: the unexplained row, gone by 0.33.0
    unexplained = _row(built, matrix_table.UNEXPLAINED)
    assert unexplained["per_version"][OLD]["new"] >= 1 and unexplained["per_version"][NEW]["new"] == 0
    assert unexplained["last_seen"] == OLD and unexplained["gone_in"] == NEW


def test_cell_grid_and_changes_between_versions(built):
    # every cell that deviates somewhere is in the grid with its verdict per version
    for cell, per in built["cells"].items():
        assert set(per) <= {OLD, NEW} and set(per.values()) != {"pass"}
    changed = {c["cell"]: c for c in built["cell_changes"]}
    assert any(c["old"] in ("new", "changed") and c["new"] in ("known", "pass") for c in changed.values())
    for c in changed.values():
        assert (c["from"], c["to"]) == (OLD, NEW)
        assert built["cells"].get(c["cell"], {}).get(OLD, "pass") == c["old"]


def test_outputs_html_json_and_text(built, tmp_path):
    jp, hp = matrix_page.write_outputs(built, tmp_path)
    again = json.loads(jp.read_text())
    assert again["schema"] == matrix_table.SCHEMA and again["findings"] == built["findings"]
    page = hp.read_text()
    for needle in ("think-end-swallowed", OLD, NEW, "first seen", "(unexplained)"):
        assert needle in page
    table = matrix_page.text_table(built)
    assert table.splitlines()[0].split()[:3] == ["finding", OLD, NEW]


def test_seen_on_write_back_edits_only_those_lines(built, tmp_path):
    reg = tmp_path / "findings.yaml"
    reg.write_text(re.sub(r"(?m)^    seen_on: \[.*\]$", "    seen_on: []", known.DEFAULT_REGISTRY.read_text()))
    before = reg.read_text().splitlines()
    added = matrix_table.write_seen_on(built, reg)
    after = reg.read_text().splitlines()
    assert "think-end-swallowed" in added[OLD] and "think-end-swallowed" in added[NEW]
    assert "structural-tag-rejects-think-gap" not in added[OLD] + added[NEW]
    assert known.load_registry(reg)["think-end-swallowed"]["seen_on"] == [OLD, NEW]
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed and all(b.startswith("    seen_on: [") for _, b in changed)
    assert matrix_table.write_seen_on(built, reg) == {}  # idempotent


@pytest.mark.parametrize("text, kind", [("0.30.0", "release"), ("nightly", "nightly"), ("commit:abc1234", "commit"),
                                        ("0123456789abcdef0123456789abcdef01234567", "commit"),
                                        ("/w/vllm-0.30.0-cp38-abi3-manylinux_2_28_x86_64.whl", "wheel"),
                                        ("installed", "installed")])
def test_version_specs(text, kind):
    spec = matrix_installs.parse_spec(text)
    assert spec.kind == kind
    if kind == "wheel":
        assert spec.key == "0.30.0"


def test_bisect_behaviour_of_one_case():
    doc = json.loads((DATA / f"observations-{OLD}.json").read_text())
    b = matrix_bisect.behaviour(doc, "cases/unknown-tool", ["minimax_m2"], ["nonstream", "stream"])
    assert set(b) == {"minimax_m2/nonstream", "minimax_m2/stream"}
    ids = matrix_bisect.case_nodeids("cases/unknown-tool", ["minimax_m2"], ["nonstream"])
    assert ids == ["suites/parser/test_golden_parser.py::test_nonstream[unknown-tool-minimax_m2]"]


# ---------------------------------------------------------------- repro


_ALLOWED_IMPORTS = {"__future__", "argparse", "json", "sys", "time", "urllib", "vllm", "xgrammar"}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from fixtures.tokenizer import write_tokenizer

    return write_tokenizer(tmp_path_factory.mktemp("repro-tokenizer"))


def _imports(text: str) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add((node.module or "").split(".")[0])
    return mods


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    # from an empty folder with no PYTHONPATH: the suite cannot be imported, only the installed vLLM
    return subprocess.run([sys.executable, str(script), *args], cwd=script.parent, capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(script.parent)})


def test_repro_script_exits_non_zero_while_the_finding_persists(tmp_path, tokenizer_dir):
    out = tmp_path / "repro.py"
    res = subprocess.run([sys.executable, "-m", "fixtures.repro", "param-whitespace-kept", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert _imports(text) <= _ALLOWED_IMPORTS, _imports(text)
    run = _run(out, "--tokenizer", str(tokenizer_dir))
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "DEVIATES" in run.stdout and "expected" in run.stdout and "observed" in run.stdout
    assert "param-whitespace-kept" in run.stdout


def test_repro_script_exits_zero_where_vllm_meets_the_expectation(tmp_path, tokenizer_dir):
    """The same script with the observed behaviour as its expectation: nothing deviates, exit 0."""
    _, data = repro.build("param-whitespace-kept")
    for check in data["checks"]:
        check["expected"] = check["recorded"]
    out = tmp_path / "repro_ok.py"
    out.write_text(repro.render(data))
    run = _run(out, "--tokenizer", str(tokenizer_dir))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "meets the MiniMax reference" in run.stdout


def test_server_repro_prints_the_serve_command_and_cannot_judge_without_a_target(tmp_path):
    text, data = repro.build("structural-tag-rejects-think-gap")
    assert data["kind"] == "server" and _imports(text) <= _ALLOWED_IMPORTS
    out = tmp_path / "repro_server.py"
    out.write_text(text)
    run = _run(out)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "vllm serve MiniMaxAI/MiniMax-M2" in run.stdout and "--tool-call-parser minimax_m2" in run.stdout
    assert "curl -s http://localhost:8000/v1/chat/completions" in run.stdout


def test_repro_refuses_an_unknown_finding():
    with pytest.raises(SystemExit, match="not in golden/findings.yaml"):
        repro.build("no-such-finding")
