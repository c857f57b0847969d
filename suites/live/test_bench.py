"""Benchmark gate: the seed's `vllm bench serve` against a served configuration, floors from
fixtures/data/floors.yaml (engine: fixtures/bench.py, judged by fixtures/bench_judge.py).

* `test_seed_benchmark_floors` (bench + gpu): each selected GPU configuration's server (--config, default
  gpu1 with GPUs; or --server-url), warm-up, --bench-repeat runs of the seed workload, floors judged on the median
  (the H20 TP4 baseline everywhere, plus the detected hardware profile) from the first warm run on (runs
  before it, during which vLLM JIT-compiled a kernel, are cold: not judged, and measured again up to
  --bench-cold-extra times), zero failed requests over every run, regression against the last
  green run in --bench-history (same configuration, GPU profile, served model kind and workload); a green
  gate of at least 3 runs writes the new history entry. Too few runs to judge, or a warm-up that only
  timed out: inconclusive, never a failure.
* `test_cpu_bench_smoke` (bench + server): the real `vllm bench serve` end to end against the tiny CPU
  server with the smoke workload: 0 failed requests, every metric present, result files parsed. Speed
  numbers of a random 2-layer model on 2 shared cores mean nothing, so no floors and no regression there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import datetime
import uuid

from fixtures import bench, bench_floors, bench_judge, bench_profiles, progress, report
from fixtures.report import trend
from fixtures.env import gpu_inventory


def _bench_tokenizer(request: pytest.FixtureRequest, endpoint, launch_configs, tokenizer_dir: Path) -> str | None:
    """The tokenizer `vllm bench serve` must count tokens with: the server's own."""
    opt = request.config.getoption
    if opt("--tokenizer"):
        return str(opt("--tokenizer"))
    if opt("model_override", default=None):
        return str(opt("model_override"))
    cfg = launch_configs.get(endpoint.config_id)
    if cfg is None:  # --server-url: bench falls back to the served model name
        return None
    if cfg.model == "real" and not opt("stand_in", default=None):
        from fixtures.configs import REAL_MODEL_ID

        return REAL_MODEL_ID
    # Model folders built in code carry the built-in tokenizer (fixtures/model.py), i.e. tokenizer_dir's.
    return str(tokenizer_dir)


def _samples_path(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.getoption("--report-dir", default=None) or "reports") / "bench-samples.json"


def _measure(bp: progress.BenchProgress, endpoint, *, on_warmup_error=lambda: None, **kwargs) -> bench.BenchRun:
    """bench.run_bench with the progress lines; a warm-up that only timed out (the server too slow to
    answer before measuring; nothing measured) ends the test as inconclusive, naming the server log."""
    try:
        with bp.running():  # terminal: a line per finished run, a heartbeat while one runs
            return bench.run_bench(base_url=endpoint.base_url, model=endpoint.model, api_key=endpoint.api_key,
                                   log=bp.log, server_log=endpoint.log_path, **kwargs)
    except bench.WarmupError as exc:
        on_warmup_error()
        report.inconclusive(f"{endpoint.config_id}: {exc} (server log: {endpoint.log_path})")


def _report(record_property, run: bench.BenchRun, outcome: bench_judge.GateOutcome | None, endpoint) -> None:
    record_property("bench_config", endpoint.config_id)
    record_property("bench_workload", run.workload.key())
    record_property("bench_spread", {k: {kk: round(v[kk], 3) for kk in ("min", "median", "max")} | {"n": v["n"]}
                                     for k, v in run.spread.items()})
    record_property("bench_result_files", [str(p) for p in run.result_paths])
    record_property("bench_run_seconds", [round(s, 1) for s in run.seconds])
    record_property("bench_warmup", {k: v for k, v in run.warmup.items() if k != "errors"})
    record_property("bench_jit_during_runs", run.jit)
    judged = run.judged
    record_property("bench_judged_runs", [i + 1 for i in judged])
    record_property("bench_not_judged_runs", [{"run": i + 1, "jit": run.jit[i]} | {k: round(float(v), 3) for k, v in
                                              run.results[i].items() if k in bench.REQUIRED_KEYS}
                                             for i in range(len(run.results)) if i not in judged])
    if outcome is not None:
        record_property("bench_gpu_profile", outcome.profile)
        record_property("bench_verdicts", outcome.rows)
        record_property("bench_previous", (outcome.previous or {}).get("_path"))


def _report_trend(record_property, endpoint, bench_settings, *, profile: str, model: str, workload: bench.Workload,
                  vllm_version: str, run: bench.BenchRun | None, outcome: bench_judge.GateOutcome | None) -> None:
    """The stored runs of this (configuration, GPU profile, workload) for the report's trend charts: the bench
    history's green runs and the committed samples of the same model, with this run (None: nothing measured)
    and the gate's limits. Read before a green run writes its own history entry. The counts go to the test's
    user properties too (bench_trend_history, bench_trend_sessions)."""
    samples = bench_profiles.of_key(bench_profiles.load_samples(), profile=profile, config_id=endpoint.config_id,
                                    model=model, workload_key=workload.key())
    history = bench_settings.history.entries(endpoint.config_id, profile, model, workload.key())
    current = None if run is None else {"metrics": run.observed, "vllm": vllm_version,
                                        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    report.record_bench_trend(endpoint.config_id, history=history, samples=samples, current=current,
                              limits=trend.limits_from_rows(outcome.rows if outcome else ()),
                              label=f"GPU profile {profile}, workload {workload.key()}, {model} model")
    record_property("bench_trend_history", len(history))
    record_property("bench_trend_sessions", len({str(s["session"]) for s in samples}))


@pytest.mark.bench
@pytest.mark.gpu
@pytest.mark.timeout(8 * 3600)
def test_seed_benchmark_floors(request, server_config, server_factory, launch_configs, bench_settings, tokenizer_dir,
                               tmp_path, vllm_version_str, record_property):
    """One seed benchmark per selected configuration (--config; refused ones have no server)."""
    external = request.config.getoption("server_url", default=None)
    gpus = gpu_inventory()
    if not gpus and not external:
        pytest.skip("the seed benchmark needs a GPU configuration (no GPU here; --server-url for a remote one)")
    if external and server_config != (request.config.getoption("minimax_configs") or [server_config])[0]:
        pytest.skip("--server-url: one server, benchmarked once (under the first --config)")
    cfg = launch_configs.get(server_config)
    if not external and cfg is not None and cfg.gpus == 0:  # before booting it
        pytest.skip(f"configuration {server_config} runs on CPU: the seed floors are for GPU configurations")
    endpoint = server_factory(server_config)
    floors = bench_settings.floors()
    workload = bench_settings.workload(default_scale="seed")
    profile = bench_settings.profile(bench_floors.gpu_names_from_inventory(gpus))
    model = endpoint.model_kind
    session = f"{vllm_version_str}-{uuid.uuid4().hex[:8]}"

    def keep_sample(result: dict, cold: list[str]) -> None:  # each run at once: an interrupted run keeps its samples
        saved = bench_profiles.append_run_samples(_samples_path(request), bench_profiles.samples_of_run(
            [result], profile=profile, config_id=endpoint.config_id, model=model, workload_key=workload.key(),
            vllm_version=vllm_version_str, gpus=gpus, metrics=floors["metrics"], session=session, cold=cold))
        record_property("bench_samples_file", str(saved))

    def trend(run: bench.BenchRun | None, outcome: bench_judge.GateOutcome | None) -> None:
        _report_trend(record_property, endpoint, bench_settings, profile=profile, model=model, workload=workload,
                      vllm_version=vllm_version_str, run=run, outcome=outcome)

    warmup = bench.warmup_requests(bench_settings.warmup_or(bench.GPU_DEFAULTS["warmup"]), workload)
    repeat = bench_settings.repeat_or(bench.GPU_DEFAULTS["repeat"])
    cold_extra = bench_settings.cold_extra_or(bench.GPU_DEFAULTS["cold_extra"])
    bp = progress.BenchProgress(request.config, f"bench {endpoint.config_id}", tmp_path, repeat, warmup, cold_extra)
    run = _measure(bp, endpoint, workload=workload, out_dir=tmp_path, warmup=warmup, repeat=repeat,
                   tokenizer=_bench_tokenizer(request, endpoint, launch_configs, tokenizer_dir),
                   timeout=bench_settings.timeout, on_result=bp.on_result(keep_sample), cold_extra=cold_extra,
                   on_warmup_error=lambda: trend(None, None))
    outcome = bench_judge.judge(run, config_id=endpoint.config_id, profile=profile, history=bench_settings.history,
                                floors=floors, model=model)
    judged = len(run.judged)  # runs before the first warm one (vLLM JIT-compiled during them) are not judged
    why = bench_judge.not_judgeable(outcome, judged)
    _report(record_property, run, outcome, endpoint)
    bench_judge.record(endpoint.config_id, run, outcome, judgeable=why is None)
    trend(run, outcome)
    cold = run.cold_note()
    summary = (f"config {endpoint.config_id} ({model} model), GPU profile {profile} ({len(gpus)}x "
               f"{gpus[0]['name'] if gpus else 'remote'}), vLLM {vllm_version_str}, workload {workload.key()}, "
               f"{len(run.results)} run(s), {judged} judged\n{bench.format_spread(run.spread)}\n{bench_judge.format_rows(outcome.rows)}"
               + (f"\n{cold}" if cold else ""))
    print(summary)
    if outcome.passed and judged >= bench_judge.MIN_REPEATS:
        path = bench_settings.history.write(config_id=endpoint.config_id, gpu_profile=profile, model=model,
                                            workload=workload, vllm_version=vllm_version_str, spread=run.spread,
                                            gpus=gpus)
        record_property("bench_history_written", str(path))
    bench_profiles.mark_session(_samples_path(request), session,
                                "pass" if outcome.passed else "inconclusive" if why else "fail")
    if why:
        report.inconclusive(f"{endpoint.config_id}: {why}\n{summary}")
    assert outcome.passed, "benchmark gate failed:\n" + summary


@pytest.mark.bench
@pytest.mark.server
@pytest.mark.timeout(600)
def test_cpu_bench_smoke(request, server_factory, launch_configs, bench_settings, tokenizer_dir, tmp_path,
                         record_property):
    endpoint = server_factory("cpu")
    floors = bench_settings.floors()
    workload = bench_settings.workload(default_scale="smoke")
    # Plain requests reach the random tiny model (the replay processor needs a script): ignore EOS so every
    # request makes exactly output_len tokens and TPOT/ITL exist.
    workload = bench.Workload(workload.name, workload.input_len, workload.output_len, workload.num_prompts,
                              workload.max_concurrency, ignore_eos=True)
    warmup = bench.warmup_requests(bench_settings.warmup_or(bench.SMOKE_DEFAULTS["warmup"]), workload)
    repeat = bench_settings.repeat_or(bench.SMOKE_DEFAULTS["repeat"])
    bp = progress.BenchProgress(request.config, f"bench {endpoint.config_id}", tmp_path, repeat, warmup)
    run = _measure(bp, endpoint, workload=workload, out_dir=tmp_path, warmup=warmup, repeat=repeat,
                   tokenizer=_bench_tokenizer(request, endpoint, launch_configs, tokenizer_dir),
                   timeout=min(bench_settings.timeout, 300), on_result=bp.on_result())
    outcome = bench_judge.judge(run, config_id=endpoint.config_id, profile="cpu",
                                history=bench_judge.HistoryStore(tmp_path / "no-history"), floors=floors)
    _report(record_property, run, outcome, endpoint)
    bench_judge.record(endpoint.config_id, run, outcome)
    print(f"CPU smoke {workload.key()}: runs {[round(s, 1) for s in run.seconds]} s\n{bench.format_spread(run.spread)}")
    # Every result was loaded through the schema (all metrics present and numeric); now what is meaningful here.
    assert len(run.results) == bench_settings.repeat_or(bench.SMOKE_DEFAULTS["repeat"])
    assert [r["check"] for r in outcome.rows] == ["zero-failed"] and outcome.passed, bench_judge.format_rows(outcome.rows)
    for res in run.results:
        assert res["failed"] == 0 and res["completed"] == workload.num_prompts, res
        assert res["total_output_tokens"] == workload.num_prompts * workload.output_len, res
        assert res["total_input_tokens"] >= workload.num_prompts * workload.input_len * 0.9, res
        assert res["output_throughput"] > 0 and res["duration"] > 0
        assert 0 < res["mean_ttft_ms"] <= res["p99_ttft_ms"] * 1.0001
        assert res["mean_tpot_ms"] > 0 and res["mean_itl_ms"] > 0
    spread = run.spread["output_throughput"]
    assert spread["min"] <= spread["median"] <= spread["max"]
