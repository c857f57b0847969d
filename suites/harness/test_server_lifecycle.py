"""The server fixture's life-cycle: no process left behind, clear errors, Ctrl-C safe.

Each test runs pytest in a subprocess on a small inner test file (in a temporary folder, with the
suite's conftest loaded as a plugin), with its own session marker, server log folder and report
folder, and checks with psutil that no process carrying that marker survives. The tests that boot
the CPU server need vLLM's CPU build (scripts/setup.sh); each stops the outer session's servers
first so that at most one server runs at a time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from fixtures import configs, endpoint, server_manager, server_process

pytestmark = pytest.mark.harness
ROOT = configs.ROOT
SUBPROCESS_TIMEOUT = 900

INNER_SERVER_TESTS = textwrap.dedent('''
    import os, signal, time
    import pytest

    def test_boot_and_chat(server_factory):
        ep = server_factory("cpu")
        r = ep.client(timeout=120).chat.completions.create(
            model=ep.model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert r.choices[0].message is not None
        assert server_factory("cpu") is ep            # cached: one boot per (config, parser)

    def test_same_server_again(server_factory):
        ep = server_factory("cpu")
        r = ep.client(timeout=120).completions.create(model=ep.model, prompt="x", max_tokens=2)
        assert r.choices
''')

INNER_KILLED = textwrap.dedent('''
    import os, signal, time
    import pytest

    def test_server_killed_mid_test(server_factory):
        ep = server_factory("cpu")
        os.killpg(ep.server_pid, signal.SIGKILL)      # the server dies under the test
        time.sleep(2)
        ep.client(timeout=30).completions.create(model=ep.model, prompt="x", max_tokens=2)
''')

INNER_BOOT_ONLY = textwrap.dedent('''
    def test_boot(server_factory):
        server_factory("cpu")
''')

INNER_EXTERNAL = textwrap.dedent('''
    def test_external(server_factory):
        server_factory()
''')


needs_cpu_server = pytest.mark.skipif(not configs.cpu_server_possible(), reason=configs.CPU_SERVER_NEEDS)


def _marked(token: str) -> list[psutil.Process]:
    return server_process.marked_processes(token)


def _assert_none_left(token: str, wait: float = 30) -> None:
    deadline = time.monotonic() + wait
    while True:
        left = _marked(token)
        if not left:
            return
        if time.monotonic() > deadline:
            desc = []
            for p in left:
                try:
                    desc.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                except psutil.Error:
                    pass
            for p in left:  # clean up before failing
                try:
                    p.kill()
                except psutil.Error:
                    pass
            pytest.fail("server processes left behind:\n" + "\n".join(desc))
        time.sleep(1)


class Inner:
    def __init__(self, tmp_path: Path, source: str):
        self.token = "lifecycle-" + uuid.uuid4().hex[:12]
        self.dir = tmp_path
        self.test_file = tmp_path / "test_inner.py"
        self.test_file.write_text(source)
        self.logs = tmp_path / "servers"
        self.env = dict(os.environ)
        self.env.update({server_process.TOKEN_ENV: self.token, server_manager.LOG_DIR_ENV: str(self.logs)})
        self.env.pop(endpoint.API_KEY_ENV, None)
        # one golden case: the inner session must not depend on the state of the whole corpus
        self.golden = tmp_path / "golden"
        self.golden.mkdir()
        from fixtures import golden

        cases = sorted(golden.DEFAULT_CASES_DIR.glob("*.yaml"))
        pick = golden.DEFAULT_CASES_DIR / "basic-weather-single-invoke.yaml"
        pick = pick if pick.is_file() else cases[0]
        shutil.copyfile(pick, self.golden / pick.name)

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
                "-p", "conftest", "--golden-dir", str(self.golden), "--report-dir", str(self.dir / "reports"), "-o", "timeout=600",
                "-q", "-p", "no:randomly", *extra, str(self.test_file)]

    def run(self, *extra: str, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*extra), cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def popen(self, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*extra), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                preexec_fn=server_process.sigint_as_in_a_terminal)


@pytest.fixture
def one_server_at_a_time():
    server_process.stop_all()  # servers of this (outer) session: the inner session boots its own
    yield


@needs_cpu_server
@pytest.mark.slow
def test_no_server_left_after_a_normal_session(tmp_path, one_server_at_a_time):
    inner = Inner(tmp_path, INNER_SERVER_TESTS)
    secret = "sk-lifecycle-" + uuid.uuid4().hex  # the server requires it (VLLM_API_KEY, never argv)
    inner.env[endpoint.API_KEY_ENV] = secret
    res = inner.run()
    out = res.stdout + res.stderr
    try:
        assert res.returncode == 0, out[-6000:]
        assert "2 passed" in out
        assert out.count("vllm server cpu/minimax_m2_append_think: ready in") == 1, out[-3000:]
        log = inner.logs / "cpu-minimax_m2_append_think.log"
        assert log.is_file()
        assert secret not in out
        for f in [log, *(tmp_path / "reports").rglob("*")]:
            if f.is_file():
                assert secret not in f.read_text(errors="replace"), f
    finally:
        _assert_none_left(inner.token)


@needs_cpu_server
@pytest.mark.slow
def test_server_killed_mid_test_shows_its_log_tail(tmp_path, one_server_at_a_time):
    inner = Inner(tmp_path, INNER_KILLED)
    res = inner.run()
    out = res.stdout + res.stderr
    try:
        assert res.returncode == 1, out[-6000:]
        assert "1 failed" in out
        assert "vllm server cpu/minimax_m2_append_think log tail" in out, out[-6000:]
        assert "is dead (exit code -9)" in out, out[-6000:]
        assert f"last {server_process.TAIL_LINES} lines of" in out
    finally:
        _assert_none_left(inner.token)


def test_unknown_config_is_one_clear_error(tmp_path):
    inner = Inner(tmp_path, INNER_BOOT_ONLY)
    res = inner.run("--config", "no-such-config", timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    lines = [ln for ln in out.splitlines() if "no-such-config" in ln]
    assert len(lines) == 1, out[-3000:]
    assert "unknown launch configuration" in lines[0]
    for cid in ("tp4", "dp8-ep", "cpu"):
        assert cid in lines[0]
    assert "Traceback" not in out


def test_unreachable_server_url_is_one_clear_quick_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inner = Inner(tmp_path, INNER_EXTERNAL)
    start = time.monotonic()
    res = inner.run("--server-url", f"http://127.0.0.1:{port}", timeout=120)
    took = time.monotonic() - start
    out = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    lines = [ln for ln in out.splitlines() if "--server-url" in ln]
    assert len(lines) == 1 and "not reachable" in lines[0], out[-3000:]
    assert "Traceback" not in out
    assert took < 60


def test_api_key_never_printed(tmp_path):
    secret = "sk-lifecycle-" + uuid.uuid4().hex
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inner = Inner(tmp_path, INNER_EXTERNAL)
    inner.env[endpoint.API_KEY_ENV] = secret
    res = inner.run("--server-url", f"http://127.0.0.1:{port}/v1", timeout=120)
    assert secret not in res.stdout + res.stderr
    for f in (tmp_path / "reports").rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace"), f


@needs_cpu_server
@pytest.mark.slow
def test_ctrl_c_during_boot_leaves_no_server(tmp_path, one_server_at_a_time):
    inner = Inner(tmp_path, INNER_BOOT_ONLY)
    proc = inner.popen()
    log = inner.logs / "cpu-minimax_m2_append_think.log"
    try:
        # wait until the server process exists (its log is written) and is booting
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _marked(inner.token):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.5)
        assert _marked(inner.token), "the server never started"
        # in the middle of the boot: once the engine core process exists beside the API server
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_marked(inner.token)) < 3 and proc.poll() is None:
            time.sleep(0.5)
        booting = len(_marked(inner.token))
        proc.send_signal(signal.SIGINT)  # Ctrl-C reaches pytest only, as from a terminal's foreground job
        out, _ = proc.communicate(timeout=120)
        assert "KeyboardInterrupt" in out or "Interrupted" in out or proc.returncode != 0, out[-3000:]
        assert log.is_file()
        assert booting >= 2, f"SIGINT came before the engine started ({booting} processes)"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        _assert_none_left(inner.token)
