"""The report's benchmark trend charts (fixtures/report/trend.py, issue 12 item 5): built from fabricated bench
history records written into tmp_path by the bench plugin's history store (--bench-history) and fabricated committed samples - one
point per stored run (a history entry, a session median of samples), the current run marked, the limit lines
drawn - and no chart section at all without stored runs. End-to-end through the plugin: test_report.py."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from fixtures import bench
from fixtures.bench_judge import HistoryStore
from fixtures.report import trend

pytestmark = pytest.mark.harness

WORKLOAD = bench.Workload("seed", 1024, 1024, 100, 10)
METRICS = trend.TREND_METRICS


def _spread(scale: float) -> dict:
    """A run's spread in HistoryStore.write's shape: every trend metric, throughput ~ 1000 x scale."""
    base = {m: (1000.0 if m == "output_throughput" else 10.0) * scale for m in METRICS}
    return {m: {"min": v * 0.99, "median": v, "max": v * 1.01, "n": 3} for m, v in base.items()}


def _history(tmp_path) -> list[dict]:
    store = HistoryStore(tmp_path / "bench-history")
    for version, created, scale in (("0.26.0", "2026-09-01T10:00:00+00:00", 1.0),
                                    ("0.27.0", "2026-10-01T10:00:00+00:00", 1.1),
                                    ("0.28.0", "2026-11-01T10:00:00+00:00", 1.2)):
        store.write(config_id="gpu1", gpu_profile="h100", model="reduced", workload=WORKLOAD, vllm_version=version,
                    spread=_spread(scale), created=created)
    store.write(config_id="tp4", gpu_profile="h100", model="reduced", workload=WORKLOAD, vllm_version="0.28.0",
                spread=_spread(9.0))  # another configuration: not in gpu1's chart
    return store.entries("gpu1", "h100", "reduced", WORKLOAD.key())


def _samples() -> list[dict]:
    """Two sessions: three runs of 0.26.0 (median throughput 1100) and one of 0.29.0."""
    def sample(session, vllm, date, thr):
        return {"profile": "h100", "config": "gpu1", "model": "reduced", "workload": WORKLOAD.key(),
                "session": session, "vllm": vllm, "date": date,
                "metrics": {m: (thr if m == "output_throughput" else 12.0) for m in METRICS}}
    return [sample("s-a", "0.26.0", "2026-09-15", 1000.0), sample("s-a", "0.26.0", "2026-09-15", 1100.0),
            sample("s-a", "0.26.0", "2026-09-15", 1300.0), sample("s-b", "0.29.0", "2026-11-20", 1250.0)]


ROWS = [  # fixtures.bench_judge verdict rows, as judge() makes them
    {"check": "zero-failed", "metric": "failed", "limit": 0.0, "pass": True},
    {"check": "h20-tp4", "metric": "output_throughput", "limit": 900.0, "direction": "higher", "pass": True},
    {"check": "h20-tp4", "metric": "mean_ttft_ms", "limit": 15.0, "direction": "lower", "pass": True},
    {"check": "profile:h100 (reference only)", "metric": "output_throughput", "limit": 1500.0, "gating": False,
     "direction": "higher", "pass": True},
    {"check": "regression", "metric": "output_throughput", "limit": 1150.0, "direction": "higher", "pass": True},
]


def _svgs(page: str) -> dict[str, str]:
    """metric -> its chart."""
    return {m: s for s, m in re.findall(r'(<svg class="mm-trend" data-metric="([a-z0-9_]+)".*?</svg>)', page)}


def test_one_point_per_stored_run_current_marked_limit_drawn(tmp_path):
    history = _history(tmp_path)
    assert len(history) == 3
    event = trend.trend_event("gpu1", history=history, samples=_samples(), label="GPU profile h100",
                              current={"metrics": {"output_throughput": 1234.5, "mean_ttft_ms": 11.0},
                                       "vllm": "0.30.0", "date": "2026-11-27T12:00:00+00:00"},
                              limits=trend.limits_from_rows(ROWS))
    page = trend.render_trends([event])
    assert page.startswith('<div id="mm-bench-trends">')
    svgs = _svgs(page)
    assert set(svgs) == set(METRICS)  # a chart per metric
    for metric, svg in svgs.items():
        ET.fromstring(svg)  # well-formed SVG, nothing but markup
        # 3 history entries + 2 sample sessions (the 3 runs of session s-a are one point: their median)
        assert svg.count('class="mm-trend-point"') == 5, metric
        assert svg.count('data-source="history"') == 3 and svg.count('data-source="sample"') == 2
    thr = svgs["output_throughput"]
    assert thr.count('class="mm-trend-current"') == 1 and "this run: vLLM 0.30.0, 2026-11-27: 1,234" in thr
    assert "session s-a (3 runs): vLLM 0.26.0, 2026-09-15: 1,100" in thr  # the session median
    for label in ("0.26.0", "0.27.0", "0.28.0", "0.29.0", "2026-10-01", "2026-11-20"):
        assert f">{label}</text>" in thr, label
    assert "0.28.0" in thr and "9,000" not in thr  # tp4's history stays out
    # the gate's limit (red) and the reference limit (grey); not the zero-failed or last-green rows
    assert thr.count('class="mm-trend-limit"') == 2 and 'data-check="h20-tp4"' in thr
    assert "limit h20-tp4: 900" in thr and "reference limit profile:h100 (reference only): 1,500" in thr
    assert "regression" not in thr
    assert svgs["mean_ttft_ms"].count('class="mm-trend-limit"') == 1
    assert 'class="mm-trend-limit"' not in svgs["p99_itl_ms"]  # no floor on this metric here
    assert 'class="mm-trend-current"' not in svgs["p99_itl_ms"]  # the current run did not report it
    # points in time order: the history entry of 2026-09-01 left of the session of 2026-09-15
    xs = [float(x) for x in re.findall(r'<g class="mm-trend-point"[^>]*><title>[^<]*</title><(?:circle cx|rect x)='
                                       r'"([0-9.]+)"', thr)]
    assert xs == sorted(xs) and len(xs) == 5


def test_no_stored_runs_no_chart_section():
    current = {"metrics": {"output_throughput": 1000.0}, "vllm": "0.30.0", "date": "2026-11-27"}
    assert trend.render_trends([]) == ""
    assert trend.render_trends([trend.trend_event("gpu1", current=current,
                                                  limits={"output_throughput": [{"label": "x", "value": 9.0}]})]) == ""
    assert trend.render_trends([{"kind": "bench"}]) == ""


def test_stored_runs_without_a_current_run_still_chart(tmp_path):
    """A bench that measured nothing (warm-up failed) still shows the stored runs, with no current point."""
    page = trend.render_trends([trend.trend_event("gpu1", history=_history(tmp_path))])
    assert page.count('<svg class="mm-trend"') == len(METRICS) and "mm-trend-current" not in page
