"""The CI workflow files: validated by a workflow linter (check-jsonschema's bundled GitHub-workflow
schema), their shell steps parsed by bash, and the properties the release process relies on checked:
nightly installs vLLM from the nightly index as the seed documents (or one commit's index), proves it is a
nightly build (scripts/check_vllm_nightly.py), runs every documented configuration on runners labelled by
GPU count and the parser and server tiers on CPU, retries an inconclusive run once (scripts/run-gate.sh),
publishes the report, server logs, benchmark results and history, writes the gate table to the job summary
and fails on the gate (scripts/gate_summary.py: inconclusive is never a regression); pull requests run
./suite test."""

from __future__ import annotations

import json
import os
import re
import shlex
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
    assert re.search(r"scripts/run-gate\.sh -m gpu\b", text)
    assert "--compare-with=previous/gate.json" in text
    up = next(s for s in steps(doc) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert up["if"] == "always()"
    for f in ("reports/report.html", "reports/gate.json", "reports/junit.xml"):
        assert f in up["with"]["path"]
    # secrets reach the run only through the environment, never on a command line
    assert "secrets." not in text


def _step(job: dict, name_part: str) -> tuple[int, dict]:
    found = [(i, s) for i, s in enumerate(job["steps"]) if name_part in s.get("name", "")]
    assert found, f"no step named like {name_part!r}"
    return found[0]


def test_nightly_matrix_covers_every_documented_configuration_by_gpu_count():
    from fixtures.configs import load_configs

    job = load(NIGHTLY)["jobs"]["gpu-gate"]
    assert "gpus-${{ matrix.gpus }}" in job["runs-on"]
    groups = job["strategy"]["matrix"]["include"]
    assert job["strategy"]["fail-fast"] is False
    assert sorted(g["gpus"] for g in groups) == [1, 4, 8]
    configs = load_configs()
    placed = {}
    for g in groups:
        ids = re.findall(r"--config (\S+)", g["configs"])
        assert ids, g
        for cid in ids:
            assert cid in configs, cid
            assert cid not in placed, f"{cid} in two groups"
            placed[cid] = g
        assert max(configs[c].gpus for c in ids) == g["gpus"], g  # the runner has what the largest needs
    documented = {cid for cid, c in configs.items() if c.source in ("seed", "recipe")} | {"gpu1"}
    assert documented <= set(placed), documented - set(placed)
    assert "$CONFIGS" in _step(job, "Run the gpu tier")[1]["run"] and job["env"]["CONFIGS"] == "${{ matrix.configs }}"


def test_nightly_proves_what_it_tested():
    doc = load(NIGHTLY)
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert "vllm_commit" in inputs and inputs["vllm_commit"]["default"] == ""
    for job_id in ("gpu-gate", "cpu-tiers"):
        job = doc["jobs"][job_id]
        assert job["env"]["VLLM_COMMIT"] == "${{ inputs.vllm_commit }}"
        i_install, install = _step(job, "Install")
        assert "https://wheels.vllm.ai/$VLLM_COMMIT" in install["run"]  # one commit's own wheel index
        i_check, check = _step(job, "is a nightly build")
        assert "scripts/check_vllm_nightly.py" in check["run"] and '--commit "$VLLM_COMMIT"' in check["run"]
        i_run, run = _step(job, "Run the")
        assert i_install < i_check < i_run, "the version check must run before the tests"
        assert "scripts/run-gate.sh" in run["run"]  # an inconclusive run is retried once
        _, summary = _step(job, "job summary")
        assert summary["if"] == "always()" and '--summary "$GITHUB_STEP_SUMMARY"' in summary["run"]
        _, gate = _step(job, "Fail on the release gate")
        assert gate["if"] == "always()" and "scripts/gate_summary.py reports/gate.json --exit" in gate["run"]
        up = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
        for f in ("reports/servers/", "reports/pytest-tmp/**/bench-*.json", "reports-attempt1/"):
            assert f in up["with"]["path"], (job_id, f)
    gpu = doc["jobs"]["gpu-gate"]
    up = [s for s in gpu["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert "reports/bench-samples.json" in up[0]["with"]["path"]
    hist_up = next(s for s in up if s["with"]["name"].startswith("bench-history"))
    assert hist_up["if"] == "always()" and hist_up["with"]["path"].startswith("bench-history")
    i_dl, dl = _step(gpu, "Previous benchmark history")
    assert dl["with"]["name"] == hist_up["with"]["name"] and dl["with"]["path"] == "bench-history"
    i_run, run = _step(gpu, "Run the gpu tier")
    assert i_dl < i_run and "--bench-history=bench-history" in run["run"]
    cpu = doc["jobs"]["cpu-tiers"]
    assert str(cpu["runs-on"]).startswith("ubuntu")
    assert cpu["env"]["VLLM_CPU_INDEX"] == "https://wheels.vllm.ai/nightly/cpu"
    assert '-m "parser or server"' in _step(cpu, "Run the")[1]["run"]


SCRIPTS = ROOT / "scripts"


@pytest.mark.parametrize("version,ok", [
    ("0.11.1rc2.dev145+g1a2b3c4d5", True), ("0.11.1rc2.dev145+g1a2b3c4d5.cpu", True),
    ("0.11.0", False), ("0.32.0+cpu", False), ("0.11.1rc2", False), ("0.12.0.dev3", False), ("nightly", False)])
def test_version_check_fails_on_anything_but_a_nightly(version, ok):
    p = subprocess.run([sys.executable, str(SCRIPTS / "check_vllm_nightly.py"), "--version", version],
                       capture_output=True, text=True)
    assert (p.returncode == 0) is ok, p.stdout + p.stderr
    if not ok:
        assert "::error title=vLLM under test is not a nightly build::" in p.stdout


def test_version_check_compares_the_requested_commit():
    base = [sys.executable, str(SCRIPTS / "check_vllm_nightly.py"), "--version", "0.11.1rc2.dev145+g1a2b3c4d5"]
    assert subprocess.run([*base, "--commit", "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"],
                          capture_output=True).returncode == 0
    p = subprocess.run([*base, "--commit", "ffffffffffffffff"], capture_output=True, text=True)
    assert p.returncode == 1 and "not of the requested ffffffffffffffff" in p.stdout


def test_version_check_on_the_installed_vllm_here():
    """This machine's CPU build (0.32.0+cpu) is a release: the check fails on it, as it must."""
    from fixtures.env import vllm_version

    p = subprocess.run([sys.executable, str(SCRIPTS / "check_vllm_nightly.py")], capture_output=True, text=True)
    assert p.returncode == (0 if ".dev" in vllm_version() else 1), p.stdout


def _gate(folder: Path, verdict: str) -> Path:
    (folder / "reports").mkdir(parents=True, exist_ok=True)
    gate = {"verdict": verdict, "reason": f"r-{verdict}", "run_id": "abc", "versions": {"vllm": "0.11.1.dev1+gabc"},
            "gates": {"parser": {"status": "pass", "passed": 3}, "gpu-live": {"status": verdict, "failed": 1}},
            "configurations": {"tp4": {"status": "run", "gpus": 4}},
            "metrics": {"bench": {"tp4": {"output_throughput": {"value": 10, "floor": 9, "verdict": "pass",
                                                                 "previous": 9.5}}}}}
    path = folder / "reports" / "gate.json"
    path.write_text(json.dumps(gate))
    return path


@pytest.mark.parametrize("verdict,rc", [("pass", 0), ("fail", 1), ("inconclusive", 2)])
def test_nightly_fails_exactly_when_the_gate_fails(tmp_path, verdict, rc):
    """The nightly's last step, run as the workflow writes it: pass 0, fail 1, inconclusive 2 (not a regression)."""
    for job_id in ("gpu-gate", "cpu-tiers"):
        cmd = _step(load(NIGHTLY)["jobs"][job_id], "Fail on the release gate")[1]["run"].strip()
        _gate(tmp_path, verdict)
        argv = shlex.split(cmd)
        assert argv[0] == ".venv/bin/python"
        p = subprocess.run([sys.executable, str(ROOT / argv[1]), *argv[2:]], cwd=tmp_path, capture_output=True,
                           text=True)
        assert p.returncode == rc, p.stdout + p.stderr
        assert f"verdict: {verdict}" in p.stdout
        assert ("not a regression" in p.stdout) == (verdict == "inconclusive")


def test_gate_summary_writes_the_table_and_never_calls_inconclusive_a_regression(tmp_path):
    for verdict in ("pass", "fail", "inconclusive"):
        path = _gate(tmp_path / verdict, verdict)
        summary = tmp_path / f"summary-{verdict}.md"
        p = subprocess.run([sys.executable, str(SCRIPTS / "gate_summary.py"), str(path), "--summary", str(summary),
                            "--title", "nightly gpu tp4", "--attempts", "2"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        md = summary.read_text()
        assert md.startswith("## nightly gpu tp4") and "| gate | status |" in md and "| gpu-live |" in md
        assert "| tp4 | output_throughput | 10 | 9 | pass | 9.5 |" in md and "attempt 2" in md
        assert ("regression" in md) == (verdict in ("fail", "inconclusive"))
        if verdict == "inconclusive":
            assert "not a regression" in md and "INCONCLUSIVE" in md
    p = subprocess.run([sys.executable, str(SCRIPTS / "gate_summary.py"), str(tmp_path / "none.json"), "--exit"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "no readable verdict" in p.stdout  # a run that died before its verdict


FAKE_PYTHON = """#!/usr/bin/env bash
# pytest stand-in: each call writes the next verdict of $VERDICTS to $REPORTS/gate.json
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then
  n=$(cat "$STATE" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$STATE"
  v=$(echo "$VERDICTS" | cut -d, -f"$n"); mkdir -p "$REPORTS"
  echo "{\\"verdict\\": \\"$v\\", \\"reason\\": \\"call $n\\", \\"gates\\": {}}" > "$REPORTS/gate.json"
  echo "args: $*" >> "$STATE.args"
  [ "$v" = pass ] && exit 0 || exit 1
fi
exec "$REAL_PYTHON" "$@"
"""


@pytest.mark.parametrize("verdicts,calls,final", [("pass", 1, "pass"), ("fail", 1, "fail"),
                                                   ("inconclusive,pass", 2, "pass"),
                                                   ("inconclusive,inconclusive", 2, "inconclusive")])
def test_run_gate_retries_an_inconclusive_run_once(tmp_path, verdicts, calls, final):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    reports = tmp_path / "reports"
    out = tmp_path / "github_output"
    env = {**os.environ, "PYTHON": str(fake), "REAL_PYTHON": sys.executable, "REPORTS": str(reports),
           "STATE": str(tmp_path / "state"), "VERDICTS": verdicts, "GITHUB_OUTPUT": str(out)}
    p = subprocess.run(["bash", str(SCRIPTS / "run-gate.sh"), "-m", "gpu", "--config", "tp4"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert (tmp_path / "state").read_text().strip() == str(calls), p.stdout + p.stderr
    assert json.loads((reports / "gate.json").read_text())["verdict"] == final
    assert out.read_text().strip() == f"attempts={calls}"
    assert (tmp_path / "reports-attempt1").is_dir() == (calls == 2)
    args = (tmp_path / "state.args").read_text()
    assert "-c pyproject.toml -m gpu --config tp4" in args and f"--report-dir={reports}" in args


def test_pr_workflow_runs_suite_test_on_ubuntu():
    doc = load(PR)
    assert "pull_request" in doc["on"]
    job = next(iter(doc["jobs"].values()))
    assert str(job["runs-on"]).startswith("ubuntu")
    text = run_text(doc)
    assert re.search(r"^\./suite test\b", text, re.M)
    assert "scripts/setup-browser.sh" in text
    assert any(s.get("uses", "").startswith("actions/upload-artifact@") for s in steps(doc))
