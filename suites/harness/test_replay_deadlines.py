"""Server-tier deadlines come from the server's measured speed, and a request the server cannot finish
in time is `inconclusive` - named, with the measurement - never a vLLM failure (a real `vllm serve` of
the tiny CPU model; a deliberately tiny --replay-deadline-scale stands in for a too-slow machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.golden import DEFAULT_CASES_DIR

pytestmark = [pytest.mark.harness, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CASES = ("basic-weather-single-invoke", "long-code-string-param")


def _inner(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    corpus = tmp_path / "cases"
    corpus.mkdir()
    for case in CASES:
        shutil.copy(DEFAULT_CASES_DIR / f"{case}.yaml", corpus)
    report = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites/server/test_replay.py", "-m", "server",
         f"--golden-dir={corpus}", f"--report-dir={report}", "-q", "-k", "minimax_m2 and not append_think", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "MINIMAX_SUITE_SERVER_LOG_DIR": str(report / "servers")})
    gate = json.loads((report / "gate.json").read_text())
    return proc, gate


def test_a_request_the_server_cannot_finish_in_time_is_inconclusive(tmp_path):
    proc, gate = _inner(tmp_path, "--replay-deadline-scale=0.0001")
    out = proc.stdout + proc.stderr
    server = gate["gates"]["server"]
    assert server["failed"] == 0 and server["inconclusive"] == 4, out[-3000:]
    assert gate["verdict"] == "inconclusive", gate["reason"]
    assert "timed out twice" in out and "tok/s alone" in out and "long-code-string-param" in out, out[-3000:]
    stats = json.loads(next((tmp_path / "r" / "servers").glob("*-replay.json")).read_text())
    assert stats["retried"] == 4 and stats["inconclusive"] == 4 and stats["speed"]["single_tps"] > 0
    assert {k.split(" (")[0] for k in stats["retried_because"]} == set(CASES), stats["retried_because"]
    assert all(e.startswith("ReplayTimeout") or e.startswith("APITimeoutError")
               for e in stats["retried_because"].values()), stats["retried_because"]


def test_measured_deadlines_let_the_same_requests_finish(tmp_path):
    proc, gate = _inner(tmp_path)
    assert gate["gates"]["server"]["failed"] == 0 and gate["gates"]["server"]["inconclusive"] == 0, \
        (proc.stdout + proc.stderr)[-3000:]
    stats = json.loads(next((tmp_path / "r" / "servers").glob("*-replay.json")).read_text())
    assert stats["retried"] == 0 and stats["batch_deadline_s"] >= 60
