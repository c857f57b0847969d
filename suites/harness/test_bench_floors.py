"""The benchmark gate's own logic (fixtures/bench.py, bench_floors.py, bench_judge.py) on result files made here: no server, no GPU."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from fixtures import bench, bench_floors, bench_judge, bench_profiles

pytestmark = pytest.mark.harness

# The seed's run (seed/minimax-m2-vllm-usage-guide.md), as `vllm bench serve --save-result` writes it.
SEED_RESULT = {
    "completed": 100, "failed": 0, "duration": 851.51, "total_input_tokens": 204800, "total_output_tokens": 98734,
    "request_throughput": 0.12, "output_throughput": 115.95, "total_token_throughput": 356.46,
    "max_output_tokens_per_s": 130.0, "max_concurrent_requests": 20,
    "mean_ttft_ms": 520.98, "median_ttft_ms": 523.86, "std_ttft_ms": 100.0, "p99_ttft_ms": 1086.48,
    "mean_tpot_ms": 82.82, "median_tpot_ms": 82.90, "std_tpot_ms": 1.0, "p99_tpot_ms": 84.28,
    "mean_itl_ms": 82.78, "median_itl_ms": 82.18, "std_itl_ms": 1.0, "p99_itl_ms": 83.48,
}


@pytest.fixture(scope="module")
def floors():
    return bench_floors.load_floors(bench_floors.FLOORS_PATH)


@pytest.fixture
def seed_workload(floors):
    return bench.preset("seed", floors)


def write(tmp_path: Path, name: str, data) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def scaled(result: dict, **factors: float) -> dict:
    out = copy.deepcopy(result)
    for k, f in factors.items():
        out[k] = out[k] * f
    return out


# ------------------------------------------------------------------------------------ floors data


def test_floors_file_has_sources_and_the_seed_numbers(floors):
    base = floors["baselines"][floors["baseline"]]
    assert base["source"] and "seed" in base["source"]
    assert base["values"] == {
        "output_throughput": 115.95, "mean_ttft_ms": 520.98, "p99_ttft_ms": 1086.48, "mean_tpot_ms": 82.82,
        "p99_tpot_ms": 84.28, "mean_itl_ms": 82.78, "p99_itl_ms": 83.48, "failed": 0,
    }
    assert floors["workloads"]["seed"] | {"source": None} == {
        "source": None, "input_len": 2048, "output_len": 1024, "num_prompts": 100, "max_concurrency": 10}
    for pid, prof in floors["profiles"].items():
        assert prof.get("source"), pid
        assert set(prof["values"]) <= set(floors["metrics"]), pid
    assert floors["profiles"]["h100"]["values"]["output_throughput"] == 566.84
    assert 0 < floors["floor_tolerance"]["default"] < 0.5 and floors["floor_tolerance"]["source"]
    assert floors["regression_tolerance"]["source"]
    assert bench_floors.tolerance_for("failed", floors["floor_tolerance"]) == 0.0


# ------------------------------------------------------------------------------------ command


def test_command_is_the_seed_benchmark_with_saving(seed_workload, tmp_path):
    cmd = bench.build_command(base_url="http://127.0.0.1:8123/v1", model="minimax-m2", workload=seed_workload,
                              result_dir=tmp_path, result_filename="r.json", tokenizer="/tok", cli=["vllm"])
    s = " ".join(cmd)
    assert s.startswith("vllm bench serve --backend vllm --endpoint /v1/completions --dataset-name random "
                        "--random-input-len 2048 --random-output-len 1024 --max-concurrency 10 --num-prompts 100")
    assert "--base-url http://127.0.0.1:8123 " in s  # root: bench appends /v1/completions
    assert f"--save-result --result-dir {tmp_path} --result-filename r.json" in s
    assert "--model minimax-m2" in s and "--tokenizer /tok" in s
    assert "--ignore-eos" not in s  # the seed honours EOS


def test_command_smoke_preset_and_overrides(floors):
    w = bench.workload_from_options("smoke", default_scale="seed", floors=floors)
    assert (w.input_len, w.output_len, w.num_prompts, w.max_concurrency, w.name) == (64, 16, 8, 2, "smoke")
    w2 = bench.workload_from_options(None, default_scale="seed", num_prompts=20, ignore_eos=True, floors=floors)
    assert w2.name == "custom" and w2.num_prompts == 20 and w2.input_len == 2048 and w2.ignore_eos
    assert w2.key() == "in2048-out1024-n20-c10-ignore-eos"
    assert bench.workload_from_options(None, default_scale="seed", num_prompts=100, floors=floors).name == "seed"
    cmd = bench.build_command(base_url="http://h:1/v1/", model="m", workload=w2, result_dir="d",
                              result_filename="f", cli=["vllm"])
    assert "--ignore-eos" in cmd and "--tokenizer" not in cmd and cmd[cmd.index("--base-url") + 1] == "http://h:1"
    with pytest.raises(ValueError, match="unknown bench scale"):
        bench.preset("huge", floors)


# ------------------------------------------------------------------------------------ result loading


def test_load_result_accepts_the_seed_run(tmp_path):
    data = bench.load_result(write(tmp_path, "r.json", SEED_RESULT))
    assert data["output_throughput"] == 115.95


def test_missing_metric_is_a_clear_failure_naming_it(tmp_path):
    broken = {k: v for k, v in SEED_RESULT.items() if k not in ("p99_tpot_ms", "mean_itl_ms")}
    with pytest.raises(bench.BenchError) as exc:
        bench.load_result(write(tmp_path, "r.json", broken))
    msg = str(exc.value)
    assert "missing metric(s)" in msg and "p99_tpot_ms" in msg and "mean_itl_ms" in msg and "r.json" in msg


def test_non_numeric_metric_and_bad_files(tmp_path):
    with pytest.raises(bench.BenchError, match="'output_throughput'"):
        bench.load_result(write(tmp_path, "a.json", SEED_RESULT | {"output_throughput": "fast"}))
    with pytest.raises(bench.BenchError, match="not JSON"):
        (tmp_path / "b.json").write_text("{")
        bench.load_result(tmp_path / "b.json")
    with pytest.raises(bench.BenchError, match="no result file"):
        bench.load_result(tmp_path / "none.json")


# ------------------------------------------------------------------------------------ floors


def _gate(floors, workload, result, profile="h20", config="tp4"):
    rows = bench_judge.evaluate_failed_only(result)
    for label, fset in bench_judge.applicable_floor_sets(profile=profile, config_id=config, workload=workload, floors=floors):
        rows += [r for r in bench_judge.evaluate_floors(result, fset, floors=floors, label=label) if r["metric"] != "failed"]
    return rows


def test_seed_run_passes_its_own_floor(floors, seed_workload):
    rows = _gate(floors, seed_workload, SEED_RESULT)
    assert rows and all(r["pass"] for r in rows), bench_judge.format_rows(rows)
    assert {r["metric"] for r in rows} == set(floors["metrics"])
    row = next(r for r in rows if r["metric"] == "output_throughput")
    assert set(row) >= {"metric", "observed", "floor", "limit", "direction", "pass"}
    assert row["limit"] == pytest.approx(115.95 * 0.9) and row["direction"] == "higher"


def test_within_tolerance_passes_beyond_fails(floors, seed_workload):
    ok = scaled(SEED_RESULT, output_throughput=0.91, p99_ttft_ms=1.09)
    assert all(r["pass"] for r in _gate(floors, seed_workload, ok))
    bad = scaled(SEED_RESULT, output_throughput=0.85, p99_ttft_ms=1.2)
    failed = {r["metric"] for r in _gate(floors, seed_workload, bad) if not r["pass"]}
    assert failed == {"output_throughput", "p99_ttft_ms"}


def test_any_failed_request_fails(floors, seed_workload):
    rows = _gate(floors, seed_workload, SEED_RESULT | {"failed": 1})
    assert [r["metric"] for r in rows if not r["pass"]] == ["failed"]


def test_missing_observed_metric_fails_its_row(floors, seed_workload):
    partial = {k: v for k, v in SEED_RESULT.items() if k != "p99_itl_ms"}
    rows = _gate(floors, seed_workload, partial)
    bad = [r for r in rows if not r["pass"]]
    assert [(r["metric"], r["observed"]) for r in bad] == [("p99_itl_ms", None)]
    assert "MISSING" in bench_judge.format_rows(rows)


def test_h100_profile_is_stricter_than_the_baseline(floors, seed_workload):
    rows = _gate(floors, seed_workload, SEED_RESULT, profile="h100")
    failing = {(r["check"], r["metric"]) for r in rows if not r["pass"]}
    # The H20 numbers are far from the published H100 ones: every H100 floor fails, the baseline holds.
    assert failing == {("profile:h100", m) for m in floors["profiles"]["h100"]["values"]}
    h100_like = SEED_RESULT | {"output_throughput": 600.0, "mean_ttft_ms": 250.0, "mean_tpot_ms": 16.0, "p99_tpot_ms": 17.0}
    assert all(r["pass"] for r in _gate(floors, seed_workload, h100_like, profile="h100"))


def test_floors_only_for_their_workload_and_gpus(floors, seed_workload):
    smoke = bench.preset("smoke", floors)
    assert bench_judge.applicable_floor_sets(profile="h100", config_id="tp4", workload=smoke, floors=floors) == []
    assert bench_judge.applicable_floor_sets(profile="cpu", config_id="cpu", workload=seed_workload, floors=floors) == []
    labels = [l for l, _ in bench_judge.applicable_floor_sets(profile="generic", config_id="tp4", workload=seed_workload, floors=floors)]
    assert labels == ["baseline:h20-tp4-seed"]
    # The H20 profile repeats the baseline: judged once.
    labels = [l for l, _ in bench_judge.applicable_floor_sets(profile="h20", config_id="tp4", workload=seed_workload, floors=floors)]
    assert labels == ["baseline:h20-tp4-seed"]
    # A profile naming configurations does not judge others.
    labels = [l for l, _ in bench_judge.applicable_floor_sets(profile="h200", config_id="dp8-ep", workload=seed_workload, floors=floors)]
    assert labels == ["baseline:h20-tp4-seed"]
    # The published H100 numbers are a real-weights run: they gate tp4 served with real weights, not the
    # dummy-weight stand-in (4x H100: twice their throughput and TPOT, twice their TTFT - another run shape).
    labels = [l for l, _ in bench_judge.applicable_floor_sets(profile="h100", config_id="tp4", workload=seed_workload,
                                                              floors=floors, model="real")]
    assert labels == ["baseline:h20-tp4-seed", "profile:h100"]
    labels = [l for l, _ in bench_judge.applicable_floor_sets(profile="h100", config_id="tp4", workload=seed_workload,
                                                              floors=floors, model="full")]
    assert labels == ["baseline:h20-tp4-seed"]
    # Smoke results are still judged on failed requests.
    assert bench_judge.evaluate_failed_only({"failed": 0})[0]["pass"]
    assert not bench_judge.evaluate_failed_only({})[0]["pass"]


# ------------------------------------------------------------------------------------ spread


def test_spread_and_median_judging(floors, seed_workload, tmp_path):
    runs = [scaled(SEED_RESULT, output_throughput=f, p99_ttft_ms=g) for f, g in ((1.0, 1.0), (0.5, 3.0), (1.1, 0.9))]
    loaded = [bench.load_result(write(tmp_path, f"r{i}.json", r)) for i, r in enumerate(runs)]
    spread = bench.aggregate(loaded)
    ot = spread["output_throughput"]
    assert (ot["min"], ot["median"], ot["max"], ot["n"]) == pytest.approx((115.95 * 0.5, 115.95, 115.95 * 1.1, 3))
    assert spread["p99_ttft_ms"]["median"] == pytest.approx(1086.48)
    # One noisy run (0.5x throughput, 3x P99 TTFT) does not fail the gate: the median does.
    assert all(r["pass"] for r in _gate(floors, seed_workload, bench.medians(spread)))
    assert not all(r["pass"] for r in _gate(floors, seed_workload, loaded[1]))
    assert "median" in bench.format_spread(spread)
    # Even count: the median is the mean of the middle two.
    assert bench.aggregate([{"failed": 0}, {"failed": 2}])["failed"]["median"] == 1


# ------------------------------------------------------------------------------------ hardware profiles


@pytest.mark.parametrize(("names", "profile"), [
    (["NVIDIA H100 80GB HBM3"] * 4, "h100"),
    (["NVIDIA H100 PCIe"], "h100-pcie"),  # less bandwidth than the SXM card the h100 samples come from
    (["NVIDIA H100 NVL"], "h100-nvl"),
    (["NVIDIA H200"] * 8, "h200"),
    (["NVIDIA H200 NVL"], "h200"),
    (["NVIDIA H20"] * 4, "h20"),
    (["NVIDIA H20EX"], "h20"),
    (["NVIDIA A100-SXM4-80GB"], "generic"),
    ([], "cpu"),
    (["NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"], "h100"),
])
def test_profile_selection(floors, names, profile):
    assert bench_floors.select_profile(names, floors) == profile


def test_profile_from_inventory_shape(floors):
    inv = [{"index": "0", "name": "NVIDIA H100 80GB HBM3", "memory": "81559 MiB", "driver": "580"}]
    assert bench_floors.select_profile(bench_floors.gpu_names_from_inventory(inv), floors) == "h100"


# ------------------------------------------------------------------------------------ regression + history


def test_regression_against_last_green(floors, seed_workload):
    prev = {"created": "2026-01-01T00:00:00+00:00", "vllm_version": "0.31.0",
            "metrics": bench.medians(bench.aggregate([SEED_RESULT]))}
    assert bench_judge.evaluate_regression(SEED_RESULT, None, floors=floors) == []
    rows = bench_judge.evaluate_regression(SEED_RESULT, prev, floors=floors)
    assert rows and all(r["pass"] for r in rows) and {r["metric"] for r in rows} == set(floors["metrics"])
    slower = scaled(SEED_RESULT, output_throughput=0.8, p99_itl_ms=1.15, mean_tpot_ms=1.15)
    bad = {r["metric"] for r in bench_judge.evaluate_regression(slower, prev, floors=floors) if not r["pass"]}
    # p99 tails have a 20% band, means 10%.
    assert bad == {"output_throughput", "mean_tpot_ms"}
    assert all("0.31.0" in r["source"] for r in rows)


def test_history_round_trip(tmp_path, floors, seed_workload):
    store = bench_judge.HistoryStore(tmp_path / "hist")
    assert store.latest("tp4", "h100", "full", seed_workload.key()) is None
    spread = bench.aggregate([SEED_RESULT, scaled(SEED_RESULT, output_throughput=1.2)])
    p1 = store.write(config_id="tp4", gpu_profile="h100", model="full", workload=seed_workload, vllm_version="0.31.0",
                     spread=spread, created="2026-01-01T00:00:00+00:00")
    p2 = store.write(config_id="tp4", gpu_profile="h100", model="full", workload=seed_workload, vllm_version="0.32.0+cpu",
                     spread=bench.aggregate([SEED_RESULT]), created="2026-02-01T00:00:00+00:00")
    store.write(config_id="tp4", gpu_profile="h200", model="full", workload=seed_workload, vllm_version="0.33.0",
                spread=spread, created="2026-03-01T00:00:00+00:00")
    assert p1 != p2 and p1.name == "tp4__h100__full__seed__vllm-0.31.0.json"
    latest = store.latest("tp4", "h100", "full", "seed")
    assert latest["vllm_version"] == "0.32.0+cpu" and latest["metrics"]["output_throughput"] == 115.95
    assert [e["vllm_version"] for e in store.entries("tp4", "h100", "full", "seed")] == ["0.31.0", "0.32.0+cpu"]
    first = json.loads(p1.read_text())
    assert first["metrics"]["output_throughput"] == pytest.approx(115.95 * 1.1)
    assert first["spread"]["output_throughput"]["max"] == pytest.approx(115.95 * 1.2)
    assert first["workload"]["num_prompts"] == 100
    # Rewriting the same (config, profile, workload, version) replaces its entry.
    store.write(config_id="tp4", gpu_profile="h100", model="full", workload=seed_workload, vllm_version="0.31.0",
                spread=spread, created="2026-04-01T00:00:00+00:00")
    assert len(store.entries("tp4", "h100", "full", "seed")) == 2
    assert store.latest("tp4", "h100", "full", "seed")["vllm_version"] == "0.31.0"
    # A different workload, or another served model, has its own history.
    assert store.latest("tp4", "h100", "full", "smoke") is None
    assert store.latest("tp4", "h100", "reduced", "seed") is None


def test_judge_combines_floors_and_history(tmp_path, floors, seed_workload):
    store = bench_judge.HistoryStore(tmp_path)
    run = bench.BenchRun(seed_workload, [SEED_RESULT], [], bench.aggregate([SEED_RESULT]), {"requests": 0})
    out = bench_judge.judge(run, config_id="tp4", profile="h20", history=store, floors=floors)
    assert out.passed and out.previous is None
    store.write(config_id="tp4", gpu_profile="h20", model="real", workload=seed_workload, vllm_version="0.1",
                spread=bench.aggregate([scaled(SEED_RESULT, output_throughput=1.05)]))
    out = bench_judge.judge(run, config_id="tp4", profile="h20", history=store, floors=floors)
    assert out.passed and out.previous and any(r["check"] == "regression" for r in out.rows)
    store.write(config_id="tp4", gpu_profile="h20", model="real", workload=seed_workload, vllm_version="0.2",
                spread=bench.aggregate([scaled(SEED_RESULT, output_throughput=1.5)]),
                created="2999-01-01T00:00:00+00:00")
    out = bench_judge.judge(run, config_id="tp4", profile="h20", history=store, floors=floors)
    assert not out.passed
    assert [(r["check"], r["metric"]) for r in out.rows if not r["pass"]] == [("regression", "output_throughput")]


def test_record_hands_the_report_one_row_per_metric_and_check(monkeypatch, seed_workload):
    """record() gives fixtures.report.record_bench_result its per-metric contract (called directly: the
    report plugin is always loaded; outside a session it records nothing)."""
    from fixtures import report

    run = bench.BenchRun(seed_workload, [SEED_RESULT], [], bench.aggregate([SEED_RESULT]), {"requests": 0})
    rows = bench_judge.evaluate_failed_only(SEED_RESULT) + [
        {"check": "h20-tp4", "metric": "output_throughput", "observed": 120.0, "floor": 115.95, "pass": True},
        {"check": "h100", "metric": "output_throughput", "observed": 120.0, "floor": 566.84, "pass": False},
        {"check": "regression", "metric": "output_throughput", "observed": 120.0, "floor": 130.0, "pass": False},
    ]
    outcome = bench_judge.GateOutcome("h100", rows, {"metrics": {"output_throughput": 130.0}})
    seen = []
    monkeypatch.setattr(report, "record_bench_result", lambda *a, **kw: seen.append(a + (kw,)))
    bench_judge.record("tp4", run, outcome)
    config_id, metrics, floors, verdicts, previous = seen[0][:5]
    assert config_id == "tp4"
    assert set(metrics) == {"failed", "output_throughput vs h20-tp4", "output_throughput vs h100",
                            "output_throughput vs previous green"}
    assert floors["output_throughput vs h100"] == 566.84 and floors["failed"] == 0.0
    assert verdicts == {"failed": "pass", "output_throughput vs h20-tp4": "pass",
                        "output_throughput vs h100": "fail", "output_throughput vs previous green": "fail"}
    assert previous["output_throughput vs h20-tp4"] == 130.0
    spread = seen[0][5]["spread"]
    assert spread["output_throughput vs h100"].endswith("(1 run)") and spread.keys() <= metrics.keys()
    # A run too short to judge (bench_judge.not_judgeable): its missed rows reach the report as inconclusive,
    # never "fail" (the report's bench gate fails on any recorded "fail")
    bench_judge.record("tp4", run, outcome, judgeable=False)
    assert seen[1][3] == {"failed": "pass", "output_throughput vs h20-tp4": "pass",
                          "output_throughput vs h100": "inconclusive",
                          "output_throughput vs previous green": "inconclusive"}


def test_a_short_run_that_only_misses_our_own_history_is_not_judged(floors, seed_workload, tmp_path):
    store = bench_judge.HistoryStore(tmp_path)
    store.write(config_id="tp4", gpu_profile="h20", model="real", workload=seed_workload, vllm_version="0.1",
                spread=bench.aggregate([scaled(SEED_RESULT, output_throughput=1.5)] * 3))
    slow = bench.BenchRun(seed_workload, [SEED_RESULT], [], bench.aggregate([SEED_RESULT]), {"requests": 0})
    out = bench_judge.judge(slow, config_id="tp4", profile="h20", history=store, floors=floors)
    assert not out.passed and "too few samples to judge: 1 judged run(s)" in bench_judge.not_judgeable(out, 1)
    assert bench_judge.not_judgeable(out, 3) is None, "three runs judge"
    under_contract = scaled(SEED_RESULT, output_throughput=0.5)  # the H20 contract judges any number of runs
    run = bench.BenchRun(seed_workload, [under_contract], [], bench.aggregate([under_contract]), {"requests": 0})
    assert bench_judge.not_judgeable(bench_judge.judge(run, config_id="tp4", profile="h20", history=store,
                                                       floors=floors), 1) is None


def test_regression_band_covers_the_hosts_the_measured_floor_has_seen(floors, seed_workload, tmp_path):
    """The last green run came from a faster host of the same profile (the committed gpu1 sessions: b against a
    missed mean TPOT by 0.7 % and P99 ITL by 1.9x): the regression band is at least the measured floor's."""
    store = bench_judge.HistoryStore(tmp_path)
    fast = scaled(SEED_RESULT, output_throughput=1.15)
    store.write(config_id="tp4", gpu_profile="h200", model="full", workload=seed_workload, vllm_version="0.1",
                spread=bench.aggregate([fast] * 3))
    run = bench.BenchRun(seed_workload, [SEED_RESULT] * 3, [], bench.aggregate([SEED_RESULT] * 3), {"requests": 0})
    judge = lambda samples: bench_judge.judge(run, config_id="tp4", profile="h200", history=store,  # noqa: E731
                                              floors=floors, model="full", samples=samples)
    regression = lambda out: next(r for r in out.rows  # noqa: E731
                                  if r["check"] == "regression" and r["metric"] == "output_throughput")
    alone = regression(judge([]))
    assert not alone["pass"] and alone["tolerance"] == 0.10, "13 % slower than the last green run, no host data"
    hosts = _samples([1275, 1160, 1100, 1260], config="tp4")  # healthy sessions up to 14 % apart
    widened = regression(judge(hosts))
    assert widened["pass"] and widened["tolerance"] > 0.10




def test_published_numbers_of_the_hardware_are_shown_but_do_not_gate_other_configurations(seed_workload):
    floors = bench_floors.load_floors(bench_floors.FLOORS_PATH)
    slow = {"output_throughput": 200.0, "mean_ttft_ms": 100.0, "mean_tpot_ms": 3.0, "p99_tpot_ms": 4.0}
    rows = bench_judge.reference_rows(slow, profile="h100", config_id="gpu1", workload=seed_workload, floors=floors,
                                gating=["baseline:h20-tp4-seed"])
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["output_throughput"]["floor"] == 566.84
    assert by_metric["output_throughput"]["meets_reference"] is False and by_metric["output_throughput"]["pass"] is True
    assert by_metric["mean_ttft_ms"]["meets_reference"] is True
    assert all(r["gating"] is False for r in rows)
    # where the profile gates the configuration (tp4 on H100) it is judged, not shown as a reference
    assert bench_judge.reference_rows(slow, profile="h100", config_id="tp4", workload=seed_workload, floors=floors,
                                gating=["baseline:h20-tp4-seed", "profile:h100"]) == []
    outcome = bench_judge.GateOutcome("h100", rows, None)
    _, _, verdicts, _ = bench_judge.report_rows(outcome)
    assert verdicts["output_throughput vs profile:h100 (reference only)"] == "info: short of reference"


def test_a_stand_in_run_on_h100_is_not_failed_by_the_published_real_weight_numbers(floors, seed_workload, tmp_path):
    """The 4x H100 tp4 stand-in run (dummy weights, vLLM 0.26.0, session a616352f; its P99 TTFT, the since
    fixed shared-prompt warm-up, replaced by a warm run's) failed
    profile:h100's mean TTFT every time (517 > 285 ms) while doing twice its throughput: judged with the
    served model kind, the published numbers are a reference row for it, and gate a real-weights run."""
    stand_in = SEED_RESULT | {"output_throughput": 1086.6, "mean_ttft_ms": 516.8, "p99_ttft_ms": 700.0,
                              "mean_tpot_ms": 8.7, "p99_tpot_ms": 9.0, "mean_itl_ms": 8.7, "p99_itl_ms": 9.9}
    run = bench.BenchRun(seed_workload, [stand_in], [], bench.aggregate([stand_in]), {"requests": 10}, jit=[[]])
    store = bench_judge.HistoryStore(tmp_path)
    full = bench_judge.judge(run, config_id="tp4", profile="h100", history=store, floors=floors, model="full", samples=[])
    assert full.passed, bench_judge.format_rows(full.rows)
    ref = next(r for r in full.rows if r["check"] == "profile:h100 (reference only)" and r["metric"] == "mean_ttft_ms")
    assert ref["meets_reference"] is False and ref["gating"] is False
    real = bench_judge.judge(run, config_id="tp4", profile="h100", history=store, floors=floors, model="real", samples=[])
    assert [(r["check"], r["metric"]) for r in real.rows if not r["pass"]] == [("profile:h100", "mean_ttft_ms")]


# ------------------------------------------------------------------------------------ measured profiles


SEED_KEY = {"profile": "h200", "config_id": "tp4", "model": "full", "workload_key": "seed"}


def _samples(values, config="tp4", model="full", per_session=1):
    """One sample per value; `per_session` consecutive values share a session (repeats of one server)."""
    return [{"profile": "h200", "config": config, "model": model, "workload": "seed", "vllm": "0.26.0",
             "session": f"s{i // per_session}", "date": "2026-11-27",
             "metrics": {"output_throughput": v, "mean_tpot_ms": 1000.0 / v}} for i, v in enumerate(values)]


def _floor(floors, samples, config="tp4"):
    tol = {m: bench_floors.tolerance_for(m, floors["regression_tolerance"]) for m in floors["metrics"]}
    return bench_profiles.floor_set(samples, profile="h200", config_id=config, model="full", workload_key="seed",
                                    metrics=floors["metrics"], tolerance=tol)


def test_measured_floor_from_session_medians_and_their_spread(floors):
    fs = _floor(floors, _samples([1000, 1100, 1200, 1150]))
    assert fs["gating"] and fs["n"] == 4 and fs["values"]["output_throughput"] == 1125
    # MAD of the session medians = 50 -> 3 x MAD / median = 13.3 % > the 10 % tolerance
    assert fs["bands"]["output_throughput"] == pytest.approx(150 / 1125)
    assert _floor(floors, _samples([1000, 1001, 1002]))["bands"]["output_throughput"] == 0.10, "never under tolerance"
    # three repeats of one server are one session: a reference, never a gate
    one = _floor(floors, _samples([1000, 1001, 1002], per_session=3))
    assert one["n"] == 1 and not one["gating"] and "reference only" in one["source"]
    # a within-session spread wider than the tolerance widens the band
    wide = _floor(floors, _samples([800, 1000, 1200, 800, 1000, 1200, 800, 1000, 1200], per_session=3))
    assert wide["gating"] and wide["bands"]["output_throughput"] == pytest.approx(0.4)
    assert _floor(floors, _samples([1000]), config="tp4-piecewise") is None


def test_measured_band_covers_every_recorded_host(floors):
    """The gpu1 case measured on the device machines: three sessions on hosts like A agree within ~3 %, one on
    host B is 10 % slower. MAD calls B an outlier (band 10 %: B's own session would fail a rerun); the band
    reaches the worst recorded session plus the within-session spread instead, and a run well past every
    host seen still fails."""
    samples = _samples([3480, 3450, 3613, 3575, 3500, 3560, 3150, 3220, 3050], per_session=3)  # B: last three
    fs = _floor(floors, samples)
    med, band = fs["values"]["output_throughput"], fs["bands"]["output_throughput"]
    within = statistics.median([(3613 - 3450) / 3480, (3575 - 3500) / 3560, (3220 - 3050) / 3150])
    assert band == pytest.approx((med - 3150) / med + within) and band > 0.10
    assert 3150 >= med * (1 - band), "host B's session median is inside its own profile"
    assert 2800 < med * (1 - band), "a 20 % drop from the median is still a failure"


def test_measured_floor_gates_from_three_sessions_and_only_its_configuration(floors, seed_workload, tmp_path):
    store = bench_judge.HistoryStore(tmp_path)
    slow = scaled(SEED_RESULT, output_throughput=1000 / 115.95 * 0.7)  # 700 tok/s: 30 % under 1000
    run = bench.BenchRun(seed_workload, [slow], [], bench.aggregate([slow]), {"requests": 0})
    judge = lambda samples, config="tp4": bench_judge.judge(run, config_id=config, profile="h200", history=store,  # noqa: E731
                                                      floors=floors, model="full", samples=samples)
    two = judge(_samples([1000, 1000]))
    assert two.passed and any("reference only" in r["check"] and not r["meets_reference"] for r in two.rows)
    three = judge(_samples([990, 1000, 1010]))
    assert [(r["check"], r["metric"]) for r in three.rows if not r["pass"]] == [
        ("measured:h200/tp4/full", "output_throughput"), ("measured:h200/tp4/full", "mean_tpot_ms")]
    assert judge(_samples([990, 1000, 1010]), config="tp4-piecewise").passed, "another configuration's samples"


def test_a_recorded_session_held_out_is_judged_against_the_others(floors):
    """`bench_profiles check`: each session judged as a rerun against the floor the other sessions of its
    key give. Four agreeing sessions pass; a fifth host 30 % slower misses the floor of the four, it is the
    only session that does, and the metrics it misses are unsettled: they do not gate."""
    agree = _samples([1000, 1010, 990, 1005])
    assert all(not [r for r in h["rows"] if not r["pass"]] and h["gating"] and h["against"] == 3
               for h in bench_judge.hold_out_sessions(agree, floors=floors))
    assert bench_judge.hold_out_text(agree, floors=floors).count(": pass") == 4
    assert bench_judge.measured_floor(agree, floors=floors, **SEED_KEY)["unsettled"] == {}
    five = agree + [dict(_samples([700])[0], session="slow-host")]
    held = bench_judge.hold_out_sessions(five, floors=floors)
    assert {h["session"] for h in held if any(not r["pass"] for r in h["rows"])} == {"slow-host"}
    text = bench_judge.hold_out_text(five, floors=floors)
    assert ("session slow-host (1 run(s)) vs the other 4 session(s) (gating): outside: output_throughput, "
            "mean_tpot_ms (unsettled, not gating)") in text
    assert "output_throughput: 700.00 vs limit" in text
    unsettled = bench_judge.measured_floor(five, floors=floors, **SEED_KEY)["unsettled"]
    assert sorted(unsettled) == ["mean_tpot_ms", "output_throughput"]
    assert unsettled["output_throughput"][0].startswith("session slow-host held out: 700.00 vs limit")
    assert "reference only (every metric unsettled)" in bench_judge.profiles_text(five, floors=floors)
    # a session without the metric: it does not gate either, and the reason says so
    partial = agree[:2] + [dict(agree[2], metrics={"output_throughput": 990})]
    assert bench_judge.measured_floor(partial, floors=floors, **SEED_KEY)["unsettled"] == {
        "mean_tpot_ms": ["session s2 held out: not measured"]}
    # two sessions: the key's floor is a reference; outside it is said, and nothing is unsettled (nothing gates)
    assert "outside: output_throughput, mean_tpot_ms (the reference)" in bench_judge.hold_out_text(
        _samples([1000, 700]), floors=floors)
    assert "unsettled" not in bench_judge.measured_floor(_samples([1000, 700]), floors=floors, **SEED_KEY)
    # three sessions: the key's floor gates, so its first gating floor is checked too (against the other two)
    assert "session s2 (1 run(s)) vs the other 2 session(s) (gating): outside" in bench_judge.hold_out_text(
        _samples([1000, 1010, 330]), floors=floors)


def test_an_unsettled_metric_is_a_reference_and_the_settled_ones_still_gate(floors, seed_workload, tmp_path):
    """tp4-piecewise on 4x H200 (three passed sessions of vLLM 0.26.0): output throughput 466 / 495 / 548
    tok/s, but mean TTFT 505 ms in one session against 388 / 391 in the others - that session, held out,
    misses the 10 % band of the other two, so the next healthy one may too. Mean TTFT is then a reference
    row (its reason in the source), never a failure - against the last green run neither (that run may
    have had the fastest host); throughput still fails a 30 % drop, against both."""
    samples = [{"profile": "h200", "config": "tp4", "model": "full", "workload": "seed", "vllm": "0.26.0",
                "session": f"s{i}", "date": "2026-11-28",
                "metrics": {"output_throughput": tput, "mean_ttft_ms": ttft}}
               for i, (tput, ttft) in enumerate([(495.24, 390.96), (548.42, 387.97), (466.33, 505.26)])]
    fs = bench_judge.measured_floor(samples, floors=floors, **SEED_KEY)
    assert fs["gating"] and list(fs["unsettled"]) == ["mean_ttft_ms"]
    store = bench_judge.HistoryStore(tmp_path)
    fast = 1000 / 115.95  # SEED_RESULT's output throughput is the H20 floor: scale it to ~1000 tok/s
    green = dict(scaled(SEED_RESULT, output_throughput=fast * 0.495), mean_ttft_ms=388.0)  # the fastest TTFT seen
    store.write(config_id="tp4", gpu_profile="h200", model="full", workload=seed_workload, vllm_version="0.26.0",
                spread=bench.aggregate([green] * 3))
    slow_and_late = scaled(SEED_RESULT, output_throughput=fast * 0.33)  # 333 tok/s, under 408
    slow_and_late["mean_ttft_ms"] = 550.0  # past the unsettled limit (505), inside the H20 contract (573)
    run = bench.BenchRun(seed_workload, [slow_and_late], [], bench.aggregate([slow_and_late]), {"requests": 0})
    out = bench_judge.judge(run, config_id="tp4", profile="h200", history=store, floors=floors, model="full",
                            samples=samples)
    assert [(r["check"], r["metric"]) for r in out.rows if not r["pass"]] == [
        ("measured:h200/tp4/full", "output_throughput"), ("regression", "output_throughput")]
    assert [r["gating"] for r in out.rows if r["check"] == "regression" and r["metric"] == "mean_ttft_ms"] == [False]
    ref = next(r for r in out.rows if r["metric"] == "mean_ttft_ms" and "measured" in r["check"])
    assert ref["check"] == "measured:h200/tp4/full (reference only)" and ref["meets_reference"] is False
    assert "mean_ttft_ms does not gate, unsettled (session s2 held out: 505.26 vs limit 428.41" in ref["source"]
    assert "mean_ttft_ms" not in out.floor_sets["measured:h200/tp4/full"]["values"]
    healthy = bench.BenchRun(seed_workload, [scaled(SEED_RESULT, output_throughput=fast * 0.5)], [],
                             bench.aggregate([scaled(SEED_RESULT, output_throughput=fast * 0.5)]), {"requests": 0})
    assert bench_judge.judge(healthy, config_id="tp4", profile="h200", history=store, floors=floors,
                             model="full", samples=samples).passed, "500 tok/s, TTFT 521 ms: inside every gating limit"


# What the committed samples gate, pinned: a sample that changes it (a key starts or stops gating a metric) is
# an edit of this table too, so it is reviewed - an outlier session would otherwise quietly make a metric a
# reference for good (sessions that agree with the majority never settle it again).
COMMITTED_UNSETTLED = {
    ("h100", "gpu1", "reduced", "seed"): set(),
    ("h200", "tp4", "full", "seed"): set(),
    ("h200", "tp4-piecewise", "full", "seed"): {"mean_ttft_ms"},  # 388 / 391 / 505 ms over three sessions
}


def test_committed_samples_gate_what_the_table_says(floors):
    """The committed samples, each session held out against the others of its key: exactly the keys of
    COMMITTED_UNSETTLED gate, each with exactly those metrics unsettled (shown, not gating), so a rerun on a
    host already recorded passes every metric that gates."""
    samples = bench_profiles.load_samples()
    assert samples, "fixtures/data/bench-samples.yaml holds the device machines' measurements"
    seen = {}
    for key in bench_profiles.keys_of(samples):
        fs = bench_judge.measured_floor(samples, floors=floors, **key)
        if fs["gating"]:
            seen[tuple(key.values())] = set(fs["unsettled"])
    assert seen == COMMITTED_UNSETTLED, "\n" + bench_judge.hold_out_text(samples, floors=floors)


def test_profiles_cli_shows_each_floor_and_its_spread(capsys):
    assert bench_profiles.main(["show"]) == 0
    out = capsys.readouterr().out
    assert "h100 / gpu1 / reduced model / seed workload" in out and "GATING" in out
    assert "session medians" in out and "reference only (gates from 3 sessions)" in bench_judge.profiles_text(
        _samples([1000, 1010]))
    noisy = [dict(s, metrics=dict(s["metrics"], mean_ttft_ms=t))
             for s, t in zip(_samples([1000, 1010, 990, 1005]), (390, 388, 505, 392))]
    text = bench_judge.profiles_text(noisy, floors=bench_floors.load_floors(bench_floors.FLOORS_PATH))
    assert "GATING (2 of 3 metrics)" in text and "no, unsettled: session s2 held out: 505.00 vs limit" in text
    assert bench_profiles.main(["check"]) == 0 and "vs the other" in capsys.readouterr().out
    assert bench_profiles.main(["nonsense"]) == 2 and "usage:" in capsys.readouterr().err


def test_regression_band_widens_with_the_previous_runs_spread(floors, seed_workload, tmp_path):
    store = bench_judge.HistoryStore(tmp_path)
    noisy = [scaled(SEED_RESULT, output_throughput=f) for f in (0.8, 1.0, 1.2)]
    store.write(config_id="tp4", gpu_profile="h20", model="real", workload=seed_workload, vllm_version="0.1",
                spread=bench.aggregate(noisy))
    down15 = scaled(SEED_RESULT, output_throughput=0.85)
    rows = bench_judge.evaluate_regression(down15, store.latest("tp4", "h20", "real", "seed"), floors=floors)
    row = next(r for r in rows if r["metric"] == "output_throughput")
    assert row["tolerance"] == pytest.approx(0.4) and row["pass"], "a 15 % drop inside a 40 % measured spread"


def test_samples_of_a_run_carry_provenance(floors, tmp_path):
    s = bench_profiles.samples_of_run([SEED_RESULT, SEED_RESULT], profile="h100", config_id="gpu1", model="reduced",
                                      workload_key="seed", vllm_version="0.26.0", metrics=floors["metrics"],
                                      gpus=[{"name": "NVIDIA H100 80GB HBM3"}], date="2026-11-27", session="x1")
    assert len(s) == 2 and s[0]["weights"] == "dummy" and s[0]["gpus"] == "1x NVIDIA H100 80GB HBM3"
    assert {x["session"] for x in s} == {"x1"}
    src = tmp_path / "new.json"
    src.write_text(json.dumps(s))
    bench_profiles.mark_session(src, "x1", "pass")
    dest = tmp_path / "samples.yaml"
    assert bench_profiles.add(src, dest) == (2, 0)
    assert bench_profiles.add(src, dest) == (0, 0), "a session already in the file is not added twice"
    assert len(bench_profiles.load_samples(dest)) == 2


def test_only_sessions_that_passed_become_samples(floors, tmp_path):
    """The band reaches the worst recorded session, so `add` takes only sessions whose bench gate passed: a
    failed, an inconclusive (too few runs to judge a miss) or an interrupted (unjudged) session makes it
    refuse the file whole (nothing written), naming each."""
    def session(name):
        return bench_profiles.samples_of_run([SEED_RESULT], profile="h100", config_id="gpu1", model="reduced",
                                             workload_key="seed", vllm_version="0.26.0", metrics=floors["metrics"],
                                             gpus=[{"name": "NVIDIA H100 80GB HBM3"}], date="2026-11-27",
                                             session=name)
    src, dest = tmp_path / "bench-samples.json", tmp_path / "samples.yaml"
    src.write_text(json.dumps(session("bad") + session("unsure") + session("cut") + session("good")))
    for name, verdict in (("bad", "fail"), ("unsure", "inconclusive"), ("good", "pass")):
        bench_profiles.mark_session(src, name, verdict)
    with pytest.raises(bench_profiles.SampleError) as info:
        bench_profiles.add(src, dest)
    assert all(w in str(info.value) for w in ("bad (fail)", "unsure (inconclusive)", "cut (not judged"))
    assert not dest.exists()
    for name in ("bad", "unsure", "cut"):
        bench_profiles.mark_session(src, name, "pass")
    assert bench_profiles.add(src, dest) == (4, 0)
    assert {x.get("gate") for x in bench_profiles.load_samples(dest)} == {"pass"}


def test_cold_runs_never_become_samples(floors, tmp_path, capsys, monkeypatch):
    """A run during which vLLM JIT-compiled a kernel is kept in the run's file (marked cold, with the
    kernels) but `add` leaves it out: a floor of steady-state runs must not carry a cold server's tail.
    One refused file among several does not keep the others out (exit 1, the others added)."""
    def run(kernels):
        return bench_profiles.samples_of_run([SEED_RESULT], profile="h200", config_id="tp4", model="full",
                                             workload_key="seed", vllm_version="0.26.0", metrics=floors["metrics"],
                                             gpus=[{"name": "NVIDIA H200"}] * 4, date="2026-11-28", session="s1",
                                             cold=kernels)
    samples = run(["fused_moe_kernel"]) + run([]) + run([])
    assert samples[0]["cold"] == ["fused_moe_kernel"] and "cold" not in samples[1]
    src, bad, dest = tmp_path / "bench-samples.json", tmp_path / "failed.json", tmp_path / "samples.yaml"
    src.write_text(json.dumps(samples))
    bench_profiles.mark_session(src, "s1", "pass")
    bad.write_text(json.dumps(run([])))  # never judged: refused
    monkeypatch.setattr(bench_profiles, "SAMPLES_PATH", dest)
    assert bench_profiles.main(["add", str(bad), str(src)]) == 1
    out = capsys.readouterr()
    assert "not added" in out.err and "2 sample(s)" in out.out and "1 cold run(s) left out" in out.out
    assert [x.get("cold") for x in bench_profiles.load_samples(dest)] == [None, None]


def test_a_misspelt_model_kind_in_the_floors_file_is_one_clear_error(tmp_path):
    """A profile's `models` decides whether its floors gate; a misspelt kind would silently stop them."""
    import yaml

    doc = yaml.safe_load(bench_floors.FLOORS_PATH.read_text(encoding="utf-8"))
    doc["profiles"]["h100"]["models"] = ["Real"]
    bad = tmp_path / "floors.yaml"
    bad.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ValueError, match=r"profile h100: unknown model kind\(s\) \['Real'\]"):
        bench_floors.load_floors(bad)
    assert bench_floors.load_floors(bench_floors.FLOORS_PATH)["profiles"]["h100"]["models"] == ["real"]
