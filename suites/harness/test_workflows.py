"""The CI workflow files: validated by a workflow linter (check-jsonschema's bundled GitHub-workflow
schema), their shell steps parsed by bash, and the properties the release process relies on checked:
nightly installs vLLM from the nightly index as the seed documents, runs the gpu tier, publishes the
report and fails on the gate; pull requests run ./suite test."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
WF = ROOT / ".github" / "workflows"
NIGHTLY = WF / "nightly-gpu.yml"
PR = WF / "pr-cpu.yml"
KNOWN_CONTEXTS = {"github", "secrets", "inputs", "steps", "env", "matrix", "runner", "needs", "vars", "job",
                  "strategy", "always", "success", "failure", "cancelled", "hashFiles", "format", "contains"}


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def steps(doc: dict) -> list[dict]:
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


def run_text(doc: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps(doc))


def test_workflows_pass_the_linter():
    exe = Path(sys.executable).parent / "check-jsonschema"
    if not exe.exists():
        exe = shutil.which("check-jsonschema")
    if not exe:
        pytest.fail("check-jsonschema is not installed: requirements/test.txt must list "
                    "check-jsonschema==0.39.0 (the workflow linter)", pytrace=False)
    files = sorted(WF.glob("*.yml"))
    assert {f.name for f in files} >= {"nightly-gpu.yml", "pr-cpu.yml"}
    p = subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", *map(str, files)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_linter_catches_a_broken_workflow(tmp_path):
    exe = Path(sys.executable).parent / "check-jsonschema"
    if not exe.exists():
        pytest.fail("check-jsonschema is not installed (see test_workflows_pass_the_linter)", pytrace=False)
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\non: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    step:\n      - run: echo\n")
    p = subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0


@pytest.mark.parametrize("path", [NIGHTLY, PR], ids=lambda p: p.name)
def test_shell_steps_parse_and_expressions_are_known(path, tmp_path):
    doc = load(path)
    for i, step in enumerate(steps(doc)):
        if "run" not in step:
            assert "uses" in step and "@" in step["uses"], step
            continue
        script = re.sub(r"\$\{\{.*?\}\}", "X", step["run"])
        f = tmp_path / f"step{i}.sh"
        f.write_text(script)
        p = subprocess.run(["bash", "-n", str(f)], capture_output=True, text=True)
        assert p.returncode == 0, f"{step.get('name')}: {p.stderr}"
    text = path.read_text()
    assert text.count("${{") == text.count("}}")
    for expr in re.findall(r"\$\{\{\s*(.*?)\s*\}\}", text):
        head = re.match(r"[A-Za-z_]+", expr).group(0)
        assert head in KNOWN_CONTEXTS, expr


def test_nightly_installs_the_nightly_wheel_runs_gpu_tier_and_publishes():
    doc = load(NIGHTLY)
    assert "schedule" in doc["on"] and "workflow_dispatch" in doc["on"]
    job = next(iter(doc["jobs"].values()))
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    text = run_text(doc)
    assert "uv venv" in text
    assert re.search(r"uv pip install .*vllm --extra-index-url \"\$VLLM_EXTRA_INDEX\"", text)
    assert job["env"]["VLLM_EXTRA_INDEX"] == "https://wheels.vllm.ai/nightly"
    assert re.search(r"pytest -m gpu\b", text)
    assert "--compare-with=previous/gate.json" in text
    up = next(s for s in steps(doc) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert up["if"] == "always()"
    for f in ("reports/report.html", "reports/gate.json", "reports/junit.xml"):
        assert f in up["with"]["path"]
    # secrets reach the run only through the environment, never on a command line
    assert "secrets." not in text


def _gate_step_python(doc: dict) -> str:
    step = next(s for s in steps(doc) if s.get("name") == "Fail on the release gate")
    assert step["if"] == "always()"
    m = re.search(r"<<'PY'\n(.*?)\n\s*PY\s*$", step["run"], re.S)
    assert m, step["run"]
    return m.group(1)


@pytest.mark.parametrize("verdict,rc", [("pass", 0), ("fail", 1)])
def test_nightly_fails_exactly_when_the_gate_fails(tmp_path, verdict, rc):
    code = _gate_step_python(load(NIGHTLY))
    (tmp_path / "reports").mkdir()
    gate = {"verdict": verdict, "reason": "r",
            "gates": {"parser": {"status": "pass"}, "gpu-live": {"status": verdict}}}
    (tmp_path / "reports" / "gate.json").write_text(json.dumps(gate))
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == rc, p.stdout + p.stderr
    assert f"verdict: {verdict}" in p.stdout


def test_pr_workflow_runs_suite_test_on_ubuntu():
    doc = load(PR)
    assert "pull_request" in doc["on"]
    job = next(iter(doc["jobs"].values()))
    assert str(job["runs-on"]).startswith("ubuntu")
    text = run_text(doc)
    assert re.search(r"^\./suite test\b", text, re.M)
    assert "scripts/setup-browser.sh" in text
    assert any(s.get("uses", "").startswith("actions/upload-artifact@") for s in steps(doc))
