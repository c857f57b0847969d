"""The verdict stays honest under faults (issue 17), each fault with real parts.

Every test runs the suite's own test files in a real inner pytest process (in the repository, with its
own report folder, server log folder and server marker) and reads what that run concluded:

1. a fake endpoint - a real `python -m http.server` whose only content is a static /v1/models JSON
   listing MiniMaxAI/MiniMax-M2 - is never taken for a launched vLLM: the launch test fails saying no
   vLLM answers, the chat-template tests fail (never xfail "known", never pass); and against a real
   `vllm serve` the same launch test passes with the server's version;
2. + 3. a real SIGINT or SIGTERM to a real pytest process in the middle of a real `vllm serve` boot
   (server tier, the launch test): gate.json says `inconclusive` within 30 s (the launch test `not-run`,
   never passed), and psutil finds no vLLM process left; the same for a SIGINT while the CPU smoke
   bench's real `vllm bench serve` runs (the bench gate `inconclusive`, the report written, the
   benchmark process gone);
4. a real golden case with a lone surrogate (a YAML "\\udcff" escape) stops the run at load with one
   error naming the file and the field, not one TypeError per test counted against the parser gate;
5. a real long case (a generated write_file call in a temporary --golden-dir whose parameter exceeds the
   parser tier's stream budget) ends as `inconclusive` naming the measured per-token cost and the cost
   finding, in bounded time, instead of running into pytest's timeout.

The numbers (time to verdict after a signal, the long case's wall time and per-token cost) go to the
tests' record_property (junit.xml) and are printed (`-s`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import yaml

from fixtures import configs, endpoint, golden, server, server_manager, server_process

pytestmark = pytest.mark.harness
ROOT = configs.ROOT
LAUNCH_TEST = "suites/server/test_launch.py"
LAUNCH_ID = f"{LAUNCH_TEST}::test_configuration_launches_as_documented[cpu]"
CHAT_TEMPLATE_TEST = "suites/server/test_chat_template.py"
PARSER_TEST = "suites/parser/test_golden_parser.py"


needs_cpu_server = pytest.mark.skipif(not configs.cpu_server_possible(), reason=configs.CPU_SERVER_NEEDS)


class Run:
    """An inner pytest session over the suite's own test files, its outputs under `tmp`."""

    def __init__(self, tmp: Path, *files: str):
        self.tmp = tmp
        self.files = files
        self.reports = tmp / "reports"
        self.token = "faults-" + uuid.uuid4().hex[:12]
        self.env = dict(os.environ)
        self.env.update({server_process.TOKEN_ENV: self.token, server_manager.LOG_DIR_ENV: str(tmp / "servers")})
        self.env.pop(endpoint.API_KEY_ENV, None)
        self.env.pop("PYTEST_ADDOPTS", None)

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "pytest", *self.files, "--report-dir", str(self.reports), "-q", "-rA",
                "-p", "no:randomly", "-o", "timeout=600", *extra]

    def run(self, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*extra), cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def popen(self, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*extra), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                preexec_fn=server_process.sigint_as_in_a_terminal)

    @contextlib.contextmanager
    def started(self, *extra: str) -> Iterator[subprocess.Popen]:
        """popen, and at the end - passed or not - its process group killed if still alive and the vLLM
        processes it left killed too, their names in `self.left`."""
        proc = self.popen(*extra)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            self.left = _none_left(self.token)

    def gate(self) -> dict:
        return json.loads((self.reports / "gate.json").read_text())

    def properties(self, name_part: str) -> dict[str, str]:
        for case in ET.parse(self.reports / "junit.xml").iter("testcase"):
            if name_part in case.get("name", ""):
                return {p.get("name"): p.get("value") for p in case.iter("property")}
        raise AssertionError(f"no testcase {name_part!r} in junit.xml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _none_left(token: str, wait: float = 30) -> list[str]:
    """Processes still carrying the inner session's server marker after `wait` s (killed, then named)."""
    deadline = time.monotonic() + wait
    while True:
        left = server_process.marked_processes(token)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    names = []
    for p in left:
        try:
            names.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except psutil.Error:
            pass
    return names


@pytest.fixture
def static_models_endpoint(tmp_path):
    """A real `python -m http.server` serving only /v1/models, listing MiniMaxAI/MiniMax-M2."""
    root = tmp_path / "static"
    (root / "v1").mkdir(parents=True)
    (root / "v1" / "models").write_text(json.dumps(
        {"object": "list", "data": [{"id": configs.DEFAULT_SERVED_MODEL, "object": "model", "owned_by": "vllm"}]}))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- 1. a fake endpoint is not a vLLM


def test_static_models_endpoint_is_not_a_launched_vllm(tmp_path, static_models_endpoint):
    run = Run(tmp_path, LAUNCH_TEST, CHAT_TEMPLATE_TEST)
    res = run.run("--server-url", static_models_endpoint, "--config", "cpu", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-4000:]
    gate = run.gate()
    tests = gate["tests"]
    assert tests[LAUNCH_ID] == "failed", out[-4000:]
    launch_failure = next(f["message"] for f in gate["gates"]["server"]["failures"] if f["nodeid"] == LAUNCH_ID)
    assert "no vLLM answers at" in launch_failure and "GET /version answered HTTP 404" in launch_failure, launch_failure
    template = {n: o for n, o in tests.items() if n.startswith(CHAT_TEMPLATE_TEST)}
    ran = {n: o for n, o in template.items() if o != "skipped"}  # the other reasoning parser: skipped
    assert ran and set(ran.values()) == {"failed"}, template
    assert "xfailed" not in template.values() and "passed" not in template.values()
    assert gate["gates"]["server"]["status"] == "fail" and gate["verdict"] == "fail"
    assert not any(v == "known" for k, v in gate["cells"].items() if k.startswith("prompts/")), gate["cells"]


@needs_cpu_server
@pytest.mark.slow
def test_launch_test_passes_against_a_real_vllm_server_url(tmp_path, server_factory, vllm_version_str):
    """The check that rejects the static endpoint accepts a real `vllm serve` given as --server-url."""
    served = server_factory("cpu")
    run = Run(tmp_path, LAUNCH_TEST)
    res = run.run("--server-url", served.base_url, "--config", "cpu", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert run.gate()["tests"][LAUNCH_ID] == "passed"
    assert run.properties("launches_as_documented")["served_vllm_version"] == vllm_version_str


# ---------------------------------------------------------------- 2. + 3. signals during a real boot


def _signal_and_wait(run: Run, proc: subprocess.Popen, signum: int) -> tuple[float | None, dict | None, str, float]:
    """Send `signum` to the inner pytest only (as `timeout`, a CI cancel or a terminal's Ctrl-C does); returns
    (seconds to the first gate.json - the early one, written at the signal - or None, that gate.json, the
    inner output, seconds to its exit)."""
    sent = time.monotonic()
    proc.send_signal(signum)
    to_verdict, first = None, None
    while time.monotonic() - sent < 60:
        if (run.reports / "gate.json").exists():
            try:
                first = run.gate()
                to_verdict = time.monotonic() - sent
                break
            except ValueError:  # being written
                pass
        elif proc.poll() is not None:  # exited without a verdict
            break
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=120)
    return to_verdict, first, out, time.monotonic() - sent


def _one_server_at_a_time(request) -> None:
    """This session's own servers go first (forgotten, so a later test reboots them): 2 cores, one server."""
    manager = request.config.stash[server._MANAGER]
    for key in list(manager.servers):
        manager._forget(key)


@needs_cpu_server
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_real_vllm_boot(tmp_path, signum, request, record_property):
    _one_server_at_a_time(request)
    run = Run(tmp_path, LAUNCH_TEST)
    with run.started("--config", "cpu") as proc:
        # the middle of the boot: the API server and its engine core process exist, nothing is ready
        deadline = time.monotonic() + 300
        while len(server_process.marked_processes(run.token)) < 3:
            assert proc.poll() is None, proc.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "the inner vllm serve never got to its engine core"
            time.sleep(0.2)
        booting = len(server_process.marked_processes(run.token))
        log = tmp_path / "servers" / "cpu-minimax_m2_append_think.log"
        assert "Application startup complete" not in log.read_text(errors="replace")
        to_verdict, first, out, to_exit = _signal_and_wait(run, proc, signum)
    left = run.left
    name = signal.Signals(signum).name
    record_property("processes_at_signal", booting)
    record_property("signal_to_gate_json_s", None if to_verdict is None else round(to_verdict, 2))
    record_property("signal_to_exit_s", round(to_exit, 2))
    print(f"{name} during the vllm boot ({booting} processes): gate.json "
          f"{first and first.get('verdict')!r} after {to_verdict if to_verdict is None else round(to_verdict, 2)} s, "
          f"pytest exited (final gate.json) after {to_exit:.2f} s")
    assert not left, "vLLM processes left behind:\n" + "\n".join(left)
    assert to_verdict is not None and to_verdict < 30, out[-4000:]
    assert first["verdict"] == "inconclusive", first.get("reason")
    assert proc.returncode == 2, out[-4000:]  # stopped like Ctrl-C, not killed by the signal
    gate = run.gate()
    assert gate["final"] is True and gate["verdict"] == "inconclusive", gate["reason"]
    assert ("terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)") in gate["reason"], \
        gate["reason"]
    assert gate["interruption"]["signal"] == name
    assert gate["tests"][LAUNCH_ID] == "not-run"
    srv = gate["gates"]["server"]
    assert (srv["status"], srv["passed"], srv["not_run"]) == ("inconclusive", 0, 1), srv


@needs_cpu_server
@pytest.mark.slow
def test_sigint_during_a_real_cpu_benchmark(tmp_path, request, record_property):
    """Ctrl-C while the CPU smoke bench's real `vllm bench serve` runs against a real `vllm serve`: gate.json
    `inconclusive` within 30 s of the signal, the report written, the server and the benchmark process gone.
    Measured on the 2-core machine: gate.json 0.49 s after the signal, pytest exit 3.1 s, rc 2."""
    _one_server_at_a_time(request)
    run = Run(tmp_path, "suites/live/test_bench.py")
    bench_procs: list[psutil.Process] = []
    with run.started("-k", "cpu_bench_smoke") as proc:
        deadline = time.monotonic() + 400
        while not bench_procs:
            assert proc.poll() is None, proc.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "the inner session never started vllm bench serve"
            try:
                kids = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                kids = []
            bench_procs = [k for k in kids if _is_bench_serve(k)]
            time.sleep(0.2)
        time.sleep(1.0)  # inside the benchmark, not at its first line
        to_verdict, first, out, to_exit = _signal_and_wait(run, proc, signal.SIGINT)
    left = run.left
    bench_left = []
    for b in bench_procs:
        try:
            if b.status() != psutil.STATUS_ZOMBIE:
                bench_left.append(b.pid)
                b.kill()
        except psutil.Error:  # gone
            pass
    record_property("signal_to_gate_json_s", None if to_verdict is None else round(to_verdict, 2))
    record_property("signal_to_exit_s", round(to_exit, 2))
    print(f"SIGINT during vllm bench serve: gate.json {first and first.get('verdict')!r} after "
          f"{to_verdict if to_verdict is None else round(to_verdict, 2)} s, pytest exited after {to_exit:.2f} s")
    assert not left, "vLLM processes left behind:\n" + "\n".join(left)
    assert not bench_left, f"vllm bench serve left running: {bench_left}"
    assert to_verdict is not None and to_verdict < 30, out[-4000:]
    assert first["verdict"] == "inconclusive", first.get("reason")
    assert proc.returncode == 2, out[-4000:]
    gate = run.gate()
    assert gate["final"] is True and gate["verdict"] == "inconclusive" and "interrupted (Ctrl-C)" in gate["reason"]
    assert gate["gates"]["bench"]["status"] == "inconclusive", gate["gates"]["bench"]
    assert (run.reports / "report.html").stat().st_size > 0


def _is_bench_serve(p: psutil.Process) -> bool:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return False
    return "bench" in cmd and "serve" in cmd


# ---------------------------------------------------------------- 4. case data that cannot be encoded


def _case_with(tmp: Path, edit) -> Path:
    """The basic single-invoke case, one field edited, written with YAML escapes (so "\\udcff" is text)."""
    src = golden.DEFAULT_CASES_DIR / "basic-weather-single-invoke.yaml"
    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    edit(data)
    folder = tmp / "golden"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / src.name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=False, width=10_000), encoding="utf-8")
    return path


def _set_location(data, value):
    for parser in golden.REASONING_PARSERS:
        data["expected"][parser]["tool_calls"][0]["arguments"]["location"] = value


SURROGATES = {
    "output": (lambda d: d.update(output=d["output"].replace("</think>", "\udcff</think>")), "output"),
    "parameter": (lambda d: _set_location(d, "Paris\udcff"), "expected.minimax_m2.tool_calls.0.arguments.location"),
    "message": (lambda d: d["request"].update(messages=[{"role": "user", "content": "Weather \ud83d\ude00?"}]),
                "request.messages.0.content"),
}


@pytest.mark.parametrize("where", SURROGATES)
def test_unencodable_case_text_is_a_format_error(tmp_path, where):
    edit, field = SURROGATES[where]
    path = _case_with(tmp_path, edit)
    assert "\\ud" in path.read_text(encoding="utf-8").lower()  # the YAML escape, as a case author writes it
    with pytest.raises(golden.GoldenFormatError) as err:
        golden.load_case(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: field {field}: "), msg
    assert "surrogate" in msg and msg.encode("utf-8")  # the message itself is printable


def test_nul_and_noncharacters_are_accepted_and_tokenize(tmp_path, tokenizer):
    """What the tokenizer can take stays allowed: NUL, controls, U+FFFE, U+10FFFF."""
    text = "a\x00b\x1b\ufffe\U0010ffff"
    path = _case_with(tmp_path, lambda d: d.update(output=d["output"].replace("</think>", text + "</think>")))
    case = golden.load_case(path)
    ids = tokenizer.encode(case.output, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=False) == case.output


def test_a_negative_cold_extra_stops_the_run_before_it_starts(tmp_path):
    """--bench-cold-extra -1 would silently measure fewer runs than asked: one clear usage error, no verdict."""
    run = Run(tmp_path, PARSER_TEST)
    res = run.run("--bench-cold-extra", "-1", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, out[-4000:]
    assert "--bench-cold-extra must be 0 or more, not -1" in out and "Traceback" not in out, out[-4000:]
    assert not (run.reports / "gate.json").exists()


def test_surrogate_case_stops_the_run_at_load_with_one_clear_error(tmp_path):
    path = _case_with(tmp_path, SURROGATES["parameter"][0])
    run = Run(tmp_path, PARSER_TEST)
    start = time.monotonic()
    res = run.run("--golden-dir", str(path.parent), timeout=300)
    took = time.monotonic() - start
    out = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, out[-4000:]
    lines = [ln for ln in out.splitlines() if str(path) in ln]
    assert len(lines) == 1, out[-4000:]
    assert "field expected.minimax_m2.tool_calls.0.arguments.location: lone surrogate U+DCFF" in lines[0]
    assert "Traceback" not in out and "TypeError" not in out and "failed" not in out, out[-4000:]
    assert not (run.reports / "gate.json").exists()  # no verdict from a run that never started
    print(f"surrogate case: one usage error after {took:.1f} s: {lines[0]}")


# ---------------------------------------------------------------- 5. a long case within a budget


def _long_case(case_id: str, content_chars: int) -> dict:
    line = '    total += compute(values[i], factor=3, name="item")  # accumulate the weighted value\n'
    content = "def main(values):\n    total = 0\n" + line * (content_chars // len(line)) + "    return total\n"
    reasoning = "The user wants the module written in one call."
    output = (f"{reasoning}\n</think>\n\n<minimax:tool_call>\n<invoke name=\"write_file\">\n"
              f"<parameter name=\"path\">src/gen.py</parameter>\n<parameter name=\"content\">{content}</parameter>\n"
              "</invoke>\n</minimax:tool_call>")
    call = {"name": "write_file", "arguments": {"path": "src/gen.py", "content": content.strip()}}
    tool = {"type": "function", "function": {"name": "write_file", "description": "Write a file.", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"]}}}
    return {
        "id": case_id, "description": "One write_file call whose content parameter is long.",
        "source": "format variant", "tags": ["long-args"],
        "request": {"tools": [tool], "messages": [{"role": "user", "content": "Write src/gen.py."}]},
        "output": output,
        "expected": {
            "minimax_m2": {"reasoning": reasoning, "content": None, "tool_calls": [call],
                           "finish_reason": "tool_calls"},
            "minimax_m2_append_think": {"reasoning": None, "content": f"<think>{reasoning}\n</think>",
                                        "tool_calls": [call], "finish_reason": "tool_calls"},
        },
    }


LONG_CASE_CHARS = 60_000  # ~40k tokens with the built-in tokenizer: 16k parse token by token in the budget


@pytest.mark.slow
def test_long_case_stops_at_its_stream_budget_as_inconclusive(tmp_path, record_property):
    folder = tmp_path / "golden"
    folder.mkdir()
    case_id = "long-write-file-param"
    (folder / f"{case_id}.yaml").write_text(
        yaml.safe_dump(_long_case(case_id, LONG_CASE_CHARS), sort_keys=False, width=10**7), encoding="utf-8")
    run = Run(tmp_path, PARSER_TEST)
    start = time.monotonic()
    res = run.run("--golden-dir", str(folder), "-k", "test_stream and not append_think", timeout=900)
    wall = time.monotonic() - start
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    gate = run.gate()
    nodeid = f"{PARSER_TEST}::test_stream[{case_id}-minimax_m2]"
    assert gate["tests"] == {nodeid: "inconclusive"}, gate["tests"]
    parser = gate["gates"]["parser"]
    assert parser["status"] == "inconclusive" and parser["failed"] == 0 and gate["verdict"] == "inconclusive"
    reason = parser["inconclusives"][0]["reason"]
    assert "finding stream-parser-quadratic-cost" in reason and "ms/token" in reason, reason
    props = run.properties(f"test_stream[{case_id}-minimax_m2]")
    budget, stopped = float(props["stream_budget_s"]), float(props["stream_stopped_after_s"])
    cost, cost_last = float(props["stream_cost_ms_per_token"]), float(props["stream_cost_ms_per_token_last"])
    parsed, total = int(props["stream_tokens_parsed"]), int(props["stream_tokens_total"])
    for key, value in (("long_case_wall_s", round(wall, 1)), ("long_case_tokens", total),
                       ("long_case_tokens_parsed", parsed), ("stream_budget_s", budget),
                       ("stream_stopped_after_s", stopped), ("stream_cost_ms_per_token", cost),
                       ("stream_cost_ms_per_token_last", cost_last)):
        record_property(key, value)
    print(f"long case: {total} tokens, budget {budget} s, stopped after {stopped} s at token {parsed}, "
          f"{cost} ms/token on average ({cost_last} ms/token at the end), inner pytest wall {wall:.1f} s")
    assert budget <= stopped < budget + 30  # stopped at the budget, within one parser call of it
    assert parsed < total and cost_last > cost  # it stopped mid-stream; the per-token cost grows
    assert wall < budget + 120, f"wall {wall:.0f} s for a budget of {budget} s"
    assert re.search(rf"over its time budget of {budget:.1f} s", reason), reason
