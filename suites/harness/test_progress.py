"""Progress while something slow runs (fixtures/progress.py), and timeouts that say what they cut: lines reach
the terminal through pytest's reporter with output capture on and without -v, nothing under -q; a boot that
misses its deadline, or that pytest-timeout stops, names the duration and the server log. A process that
never answers (`sleep`) stands in for a server that hangs; no vLLM is needed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fixtures import endpoint, progress, server_manager, server_process

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]

HANGING_BOOT = '''
import sys
import pytest
from pathlib import Path
from fixtures import progress, server_process


def _hanging(tmp_path):
    log = tmp_path / "hang.log"
    srv = server_process.ServerProcess([sys.executable, "-c", "import time; print('Loading weights', flush=True); time.sleep(300)"],
                               dict(__import__("os").environ), log, f"http://127.0.0.1:{server_process.free_port()}/v1",
                               None, "m", "fake/boot")
    return srv


def test_heartbeat_while_waiting(request):
    n = {"i": 0}
    def status():
        n["i"] += 1
        return f"tick {n['i']}"
    print("CAPTURED-STDOUT")
    with progress.heartbeat(request.config, "slow thing", status, every=0.3):
        __import__("time").sleep(1.2)
    progress.line(request.config, "[slow thing] done")


def test_boot_deadline_names_duration_and_log(tmp_path):
    srv = _hanging(tmp_path)
    srv.start()
    try:
        srv.wait_ready(3)
    finally:
        srv.stop(grace=2)


@pytest.mark.timeout(3)
def test_pytest_timeout_during_a_boot(tmp_path):
    srv = _hanging(tmp_path)
    try:
        srv.start()
        srv.wait_ready(600)
    except BaseException as exc:
        srv.stop(grace=2)
        server_process.fail_if_test_timeout(exc, srv, 600)
        raise
'''


def _run(tmp_path: Path, *args: str) -> str:
    (tmp_path / "test_hang.py").write_text(textwrap.dedent(HANGING_BOOT))
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout_method = signal\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args,
                        "test_hang.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return p.stdout + p.stderr


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[str, Path]:
    d = tmp_path_factory.mktemp("progress")
    return _run(d), d


def test_heartbeat_reaches_the_terminal_without_verbose(default_run):
    out, _ = default_run
    ticks = [ln for ln in out.splitlines() if ln.startswith("[slow thing] ") and ": tick " in ln]
    assert 2 <= len(ticks) <= 5, out[-3000:]
    assert "[slow thing] done" in out
    assert "CAPTURED-STDOUT" not in out.split("= FAILURES =")[0]  # the test's own output is still captured


def test_boot_deadline_message_names_the_duration_and_the_log(default_run):
    out, d = default_run
    assert "vllm server fake/boot not ready after 3 s (boot timeout, --boot-timeout)" in out, out[-4000:]
    assert f"log {d / 'hang.log'}" in out or "hang.log; last" in out
    assert "Loading weights" in out  # the log's tail comes with it


def test_pytest_timeout_names_what_it_cut_and_the_log(default_run):
    out, _ = default_run
    assert "Timeout (>3.0s) from pytest-timeout. It stopped the boot of vllm server fake/boot after 3 s" in out, out[-4000:]
    assert "(boot timeout 600 s, waiting for /health" in out and "hang.log; last 60 lines" in out


def test_quiet_under_q(tmp_path):
    out = _run(tmp_path, "-q", "-k", "heartbeat")
    assert "tick" not in out and "[slow thing]" not in out, out[-2000:]


def test_last_log_line(tmp_path):
    log = tmp_path / "x.log"
    assert progress.last_log_line(log) == ""
    log.write_text("first\n\n  INFO\tloading   weights  \n\n")
    assert progress.last_log_line(log) == "INFO loading weights"
    log.write_text("y" * 500 + "\n")
    assert len(progress.last_log_line(log)) == 160


def test_boot_progress_status_line(tmp_path):
    """What a server boot's heartbeat says: phase and the log's last line, the API key redacted."""
    endpoint.add_secret("sk-test-progress-secret")
    log = tmp_path / "srv.log"
    log.write_text("INFO Loading weights with key sk-test-progress-secret\n")
    srv = server_process.ServerProcess(["true"], {}, log, "http://127.0.0.1:1/v1", None, "m", "cpu/minimax_m2")
    srv.phase = "waiting for /health (URLError: refused)"
    mgr = server_manager.ServerManager.__new__(server_manager.ServerManager)
    mgr.config = None
    seen = []
    orig = progress.heartbeat
    try:
        progress.heartbeat = lambda config, label, status, every=15: seen.append((label, status())) or orig(None, label, status)
        with mgr._boot_progress(srv, 600, "booting"):
            pass
    finally:
        progress.heartbeat = orig
    label, text = seen[0]
    assert label == "vllm cpu/minimax_m2"
    assert text.startswith("booting, waiting for /health (URLError: refused) | log: INFO Loading weights")
    assert "sk-test-progress-secret" not in text and text.endswith(endpoint.redact("sk-test-progress-secret"))
