"""The harness's wiring (issue 14's defects): one source for each fact, options honoured everywhere.

* the golden corpus has a home in the harness (fixtures.plugin.golden_corpus): no test imports conftest;
* --bench-floors reaches every default `load_floors()`, the parser cost gate's sizes included;
* DeprecationWarnings from vLLM's own modules are reported as early warnings (gate.json, terminal).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures import bench, bench_floors, golden
from fixtures.plugin import golden_corpus

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MINIMAX_SUITE_SESSION"))}


def test_no_test_module_imports_conftest():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "suites").rglob("*.py")
                 if re.search(r"^\s*(from conftest import|import conftest)", p.read_text(), flags=re.M)]
    assert offenders == []


def test_the_seed_benchmark_runs_once_per_selected_configuration(tmp_path):
    """`-m gpu --config tp4 --config tp4-piecewise`: one seed benchmark each (the tp4 nightly job had
    benchmarked only its first configuration); a configuration expected to refuse gets none."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites/live/test_bench.py",
                           "-m", "gpu", "-k", "seed_benchmark", "--co", "-q", "--config", "tp4", "--config",
                           "tp4-piecewise", "--config", "tp2-refused", f"--report-dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=_env())
    ids = re.findall(r"test_seed_benchmark_floors\[([\w-]+)\]", proc.stdout)
    assert ids == ["tp4", "tp4-piecewise"], proc.stdout[-2000:]


def test_golden_corpus_comes_from_the_plugin(pytestconfig):
    directory = pytestconfig.getoption("--golden-dir") or golden.DEFAULT_CASES_DIR
    assert [c.id for c in golden_corpus(pytestconfig)] == [c.id for c in golden.load_corpus(Path(directory))]


def test_default_floors_follow_use_floors(tmp_path):
    doc = bench_floors.load_floors(bench_floors.FLOORS_PATH)
    doc["parser_cost"]["max_growth"] = 123.0
    other = tmp_path / "floors.yaml"
    other.write_text(yaml.safe_dump(doc))
    before = bench_floors._floors_path
    try:
        bench_floors.use_floors(other)
        assert bench_floors.load_floors()["parser_cost"]["max_growth"] == 123.0
        assert bench.preset("smoke") == bench.preset("smoke", doc)
    finally:
        bench_floors.use_floors(before)


@pytest.mark.slow
def test_bench_floors_option_sets_the_parser_cost_sizes(tmp_path):
    doc = bench_floors.load_floors(bench_floors.FLOORS_PATH)
    doc["parser_cost"]["sizes"] = [512, 3072]
    other = tmp_path / "floors.yaml"
    other.write_text(yaml.safe_dump(doc))
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", "pyproject.toml", "--collect-only", "-q", "-p", "no:randomly",
         f"--report-dir={tmp_path / 'reports'}", f"--bench-floors={other}",
         "suites/parser/test_parser_cost.py::test_parser_per_token_cost"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ids = re.findall(r"test_parser_per_token_cost\[([^\]]+)\]", p.stdout)
    assert ids == ["512", "3k"], p.stdout[-2000:]


def test_gpu_count_is_the_lease_inventory(monkeypatch):
    """nvidia-smi lists 8 GPUs, the run may use 2 (CUDA_VISIBLE_DEVICES): a 4-GPU configuration is skipped
    with the reason, never admitted and then refused by the lease (an error)."""
    from fixtures import configs, env, gpus, server_manager

    monkeypatch.setattr(env, "gpu_inventory", lambda: [
        {"index": str(i), "name": "NVIDIA H100", "memory": "80 GiB", "driver": "1"} for i in range(8)])
    monkeypatch.delenv("MINIMAX_GPU_INVENTORY", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert configs.gpu_count() == len(gpus.detect_inventory()) == 2
    cfg = configs.load_configs()["tp4"]
    with pytest.raises(pytest.skip.Exception, match="needs 4 GPUs, 2 present"):
        server_manager.ServerManager._check_gpus(None, cfg)


def test_one_redaction_rule(monkeypatch):
    from fixtures import endpoint, report

    monkeypatch.setattr(endpoint, "_SECRETS", set())
    endpoint.add_secret("sk-wiring-test-key")
    assert endpoint.redact("key sk-wiring-test-key here") == report.redact(
        "key sk-wiring-test-key here", {"sk-wiring-test-key"}) == "key [REDACTED] here"


def test_only_vllm_deprecation_warnings_pass_the_projects_filters():
    import tomllib
    import warnings

    from _pytest.config import parse_warning_filter

    filters = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for f in filters:  # as pytest applies them: the last matching entry wins
            warnings.filterwarnings(*parse_warning_filter(f, escape=False))
        for module in ("vllm.entrypoints.fake", "transformers.fake", "fixtures.fake"):
            warnings.warn_explicit("old API", DeprecationWarning, f"/x/{module.replace('.', '/')}.py", 1,
                                   module=module)
    assert [str(w.filename) for w in seen] == ["/x/vllm/entrypoints/fake.py"]


def test_early_warnings_in_gate_json_and_terminal(tmp_path):
    from fixtures import report

    assert report.is_vllm_deprecation(DeprecationWarning, "/venv/lib/site-packages/vllm/entrypoints/x.py")
    assert not report.is_vllm_deprecation(DeprecationWarning, "/work/main/fixtures/vllm_parsers.py")
    assert not report.is_vllm_deprecation(UserWarning, "/venv/lib/site-packages/vllm/x.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (tmp_path / "test_early.py").write_text(
        "import warnings\n\n"
        "def test_a():\n"
        "    for _ in range(3):\n"
        "        warnings.warn_explicit('use new_api', DeprecationWarning, '/v/vllm/old.py', 7, module='vllm.old')\n"
        "    warnings.warn_explicit('not vllm', DeprecationWarning, '/v/other/old.py', 7, module='other.old')\n")
    env = _env() | {"PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "fixtures.report", f"--report-dir={tmp_path / 'r'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    import json

    gate = json.loads((tmp_path / "r" / "gate.json").read_text())
    assert gate["early_warnings"] == [{"category": "DeprecationWarning", "message": "use new_api",
                                       "where": "/v/vllm/old.py:7", "first_seen": "test_early.py::test_a"}]
    assert "early warnings: 1 DeprecationWarning(s) from vLLM's own modules" in p.stdout


@pytest.mark.slow
def test_one_vllm_version_reader():
    """fixtures.env.vllm_info reads what `import vllm` reports, without importing vllm (the report's need)."""
    code = ("import sys\nfrom fixtures.env import vllm_info\nfrom fixtures.report import environment\n"
            "info = vllm_info()\nassert 'vllm' not in sys.modules\nassert environment()['vllm'] == info\n"
            "import vllm\nfrom vllm import _version\n"
            "assert (info['version'], info['commit']) == (vllm.__version__, _version.__commit_id__), info\n"
            "print('same')\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.stdout.strip().endswith("same"), p.stdout[-2000:] + p.stderr[-2000:]


def test_warm_up_goes_through_the_one_http_client():
    """bench.warm_up's requests (bearer key, JSON body, a prompt of its own each; an HTTP error counts as a
    failed request) are fixtures.http_client.call's, the client the server fixture probes with."""
    import http.server
    import json
    import threading

    seen, prompts = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body["max_tokens"]))
            prompts.append(body["prompt"])
            self.send_response(503 if len(seen) > 2 else 200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        work = bench.Workload("custom", 8, 4, 3, 1)
        out = bench.warm_up(f"http://127.0.0.1:{srv.server_address[1]}/v1", "m", n=3, workload=work,
                            api_key="sk-warm", timeout=30)
    finally:
        srv.shutdown()
    assert seen == [("/v1/completions", "Bearer sk-warm", 4)] * 3
    assert out["requests"] == 3 and out["failed"] == 1 and out["errors"][0].startswith("HTTP 503")
    none = bench.warm_up("http://127.0.0.1:9/v1", "m", n=0, workload=work)  # --bench-warmup 0: nothing sent
    assert (none["requests"], none["failed"], none["timed_out"]) == (0, 0, 0)
    # every request its own prompt from the first token: one shared prompt is prefilled once and served
    # from the prefix cache to the rest, leaving a wave of distinct prefills cold for the measured run
    assert len({p.split()[0] for p in prompts}) == 3


def test_a_warm_up_that_timed_out_is_inconclusive_one_answered_wrongly_fails(tmp_path):
    """Only slowness makes a warm-up inconclusive (bench.WarmupError): an error answer or a dropped
    connection is the server misbehaving (bench.BenchError: the test fails, not 'not a regression')."""
    import http.server
    import threading
    import time as _time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.server.mode == "slow":
                _time.sleep(3)
            self.send_response(500 if self.server.mode == "error" else 200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    work = bench.Workload("custom", 8, 4, 2, 2)
    try:
        for mode, error, words in (("slow", bench.WarmupError, "timed out within 1 s"),
                                   ("error", bench.BenchError, "error answers or dropped connections")):
            srv.mode = mode
            with pytest.raises(error, match=words) as info:
                bench.run_bench(base_url=url, model="m", workload=work, out_dir=tmp_path / mode, warmup=2,
                                timeout=1, log=lambda *_: None)
            assert (type(info.value) is bench.WarmupError) == (mode == "slow")
    finally:
        srv.shutdown()


def test_warm_up_covers_one_wave_of_the_measured_concurrency():
    """A 3-request warm-up before a concurrency-10 run left a sampler kernel to JIT in the first measured
    run (a false bench FAIL on 1x H100): the warm-up is raised to one full wave; 0 still means none."""
    work = bench.Workload("seed", 2048, 1024, 100, 10)
    assert [bench.warmup_requests(n, work) for n in (0, 1, 3, 10, 20)] == [0, 10, 10, 10, 20]


def test_kernels_jit_compiled_during_a_measured_run_are_named(tmp_path):
    """vLLM's jit_monitor lines after the warm-up (the byte offset taken before a run) name a cold run."""
    log = tmp_path / "server.log"
    warm_line = "(EngineCore pid=1) WARNING [jit_monitor.py:135] Triton kernel JIT compilation during inference: fused_moe_kernel. x\n"
    log.write_text(warm_line)
    mark = log.stat().st_size
    with open(log, "a") as f:
        f.write("(APIServer pid=2) INFO Engine 000: Avg prompt throughput: 1.0 tokens/s\n")
        f.write(warm_line.replace("fused_moe_kernel", "_topk_topp_kernel"))
    assert bench.jit_compiled(log, mark) == ["_topk_topp_kernel"]
    assert bench.jit_compiled(log, 0) == ["fused_moe_kernel", "_topk_topp_kernel"]
    assert bench.jit_compiled(None, 0) == [] and bench.jit_compiled(tmp_path / "missing.log", 0) == []
    work = bench.Workload("seed", 2048, 1024, 100, 10)
    run = bench.BenchRun.measured(work, [{"failed": 0}, {"failed": 0}], {"requests": 10},
                                  jit=[["_topk_topp_kernel"], []])
    assert "run 1: _topk_topp_kernel" in run.cold_note() and "run 2:" not in run.cold_note()
    assert "not judged" in run.cold_note() and run.judged == [1]
    assert bench.BenchRun.measured(work, [{}, {}], {"requests": 10}, jit=[[], []]).cold_note() is None
    with pytest.raises(ValueError, match="1 JIT entries for 2 runs"):
        bench.BenchRun.measured(work, [{}, {}], {"requests": 10}, jit=[[]])


def test_runs_before_the_first_warm_one_are_measured_again_and_not_judged():
    """4x H200, tp4, a fresh machine: the first run JIT-compiled fused_moe_kernel (P99 TTFT 2241 ms, the
    next run 712 ms) and the median of two failed the H20 contract - a cold server, not vLLM. Runs before
    the first warm one are left out of the verdict and up to cold_extra of them are measured again. A run
    that compiles after a warm one is the server's steady state: judged. Every run cold: all judged (vLLM
    did not get warm). Failed requests count in every run, cold ones too: the most of any run is judged."""
    cold, warm = ["fused_moe_kernel"], []
    assert bench.judged_runs(3, [cold, warm, warm]) == [1, 2]
    assert bench.judged_runs(3, [cold, warm, cold]) == [1, 2], "compiled after a warm run: judged"
    assert bench.judged_runs(2, [cold, cold]) == [0, 1] and bench.judged_runs(0, []) == []
    assert bench.judged_runs(2, []) == [0, 1], "JIT not watched (no server log): every run"
    assert bench.runs_planned(3, [], 1) == 3 and bench.runs_planned(3, [cold], 1) == 4
    assert bench.runs_planned(3, [cold, cold], 1) == 4, "at most cold_extra runs are added"
    assert bench.runs_planned(3, [warm, cold], 1) == 3, "a cold run after a warm one is not measured again"
    assert bench.runs_planned(3, [cold], 0) == 3 and bench.runs_planned(0, [], 1) == 1
    assert bench.runs_planned(3, [cold], -1) == 3, "a negative extra never removes runs"
    work = bench.Workload("seed", 2048, 1024, 100, 10)
    ttft = (2241.1, 712.3, 690.0, 700.0)
    results = [{"p99_ttft_ms": t, "output_throughput": 1100.0, "failed": 0} for t in ttft]
    run = bench.BenchRun.measured(work, results, {"requests": 10}, jit=[cold, warm, warm, warm])
    assert run.observed["p99_ttft_ms"] == 700.0 and run.spread["p99_ttft_ms"]["n"] == 3
    assert "P99 TTFT 2241 ms" in run.cold_note() and "the verdict is on runs 2-4" in run.cold_note()
    later = bench.BenchRun.measured(work, results, {"requests": 10}, jit=[warm, warm, cold, warm])
    assert later.judged == [0, 1, 2, 3] and later.observed["p99_ttft_ms"] == pytest.approx(706.15)
    assert "after a warm run" in later.cold_note() and "judged" in later.cold_note()
    every = bench.BenchRun.measured(work, results[:2], {"requests": 10}, jit=[cold, cold])
    assert every.judged == [0, 1] and "every measured run" in every.cold_note() and "all judged" in every.cold_note()
    # a cold run's failed requests are not left out with its latency: the most of any run is judged
    failing = [results[0] | {"failed": 5}] + results[1:]
    run = bench.BenchRun.measured(work, failing, {"requests": 10}, jit=[cold, warm, warm, warm])
    assert run.observed["failed"] == 5 and run.observed["p99_ttft_ms"] == 700.0
    assert bench.BenchRun.measured(work, results[1:3] + [results[0] | {"failed": 1}], {"requests": 10},
                                   jit=[warm, warm, warm]).observed["failed"] == 1, "not a median of runs"


def test_bench_progress_counts_a_run_measured_again(tmp_path):
    """The progress line's total follows run_bench's plan: a cold run before the first warm one adds one."""
    from fixtures import progress

    bp = progress.BenchProgress(None, "bench tp4", tmp_path, repeat=3, warmup=10, cold_extra=1)
    seen = []
    handler = bp.on_result(lambda result, cold: seen.append(cold))
    assert (bp.done, bp.planned) == (0, 3)
    handler({}, ["fused_moe_kernel"])
    assert (bp.done, bp.planned) == (1, 4) and seen == [["fused_moe_kernel"]]
    handler({}, [])
    handler({}, [])
    assert (bp.done, bp.planned) == (3, 4)
