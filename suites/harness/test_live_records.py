"""Saved live records (issue 13): every live request and answer goes to <report-dir>/live/records.jsonl with
a summary.json; `--live-from FILE` computes the metrics again and `--record-golden` drafts cases from it,
without a server or a GPU.

data/live-tiny/ was written by the live tier itself (fixtures/live/store.py: RecordsWriter) against a plain
`vllm serve` of the tiny CPU model (vLLM 0.32.0 CPU build, dummy weights, no replay processor), 5 prompts
(data/live-tiny/prompts.yaml) x 1 repeat x stream/non-stream, --live-max-tokens 48:

    pytest -m gpu suites/live/test_live_behaviour.py --server-url http://127.0.0.1:PORT --repeat 1 \\
        --live-max-tokens 48 --live-prompts suites/harness/data/live-tiny/prompts.yaml

A random model answers noise, so its metrics fail: what is checked here is that the same numbers come back
from the file, not that they are good. The files predate the record field `stream_errors` and the metric
stream_protocol_error_rate: a record read back gets no stream errors, and the saved metrics are compared
name by name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import live

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data" / "live-tiny"
RECORDS = DATA / "records.jsonl"
PROMPTS = DATA / "prompts.yaml"


def test_saved_records_round_trip_and_give_the_saved_metrics():
    records, texts, summary = live.load_records(RECORDS)
    prompts = live.load_prompts(PROMPTS)
    assert summary["schema"] == live.SUMMARY_SCHEMA and summary["n_records"] == len(records) == 10
    assert {(r.prompt_id, r.mode) for r in records} == {(p.id, m) for p in prompts for m in live.MODES}
    # every line carries the request as sent and the answer's text as the server decoded it
    for line in RECORDS.read_text().splitlines():
        obj = json.loads(line)
        assert obj["request"]["messages"] and obj["request"]["model"] == summary["endpoint"]["model"]
        assert obj["request"]["stream"] == (obj["mode"] == "stream")
        assert obj["output_text"] and obj["prompt_text"]
        rec = live.record_from_dict(obj["record"])
        assert rec.stream_errors == [] and live.record_to_dict(rec) == {**obj["record"], "stream_errors": []}
        assert texts[tuple(rec.token_ids)] == obj["output_text"]
    now = json.loads(json.dumps(live.metrics_summary(records, prompts)))
    # the saved summary predates the fields `count`, `maximum` and `known`: compare the fields it has
    assert {mode: {name: {k: now[mode][name][k] for k in m} for name, m in saved.items()}
            for mode, saved in summary["metrics"].items()} == summary["metrics"]
    assert now["stream"]["stream_protocol_error_rate"]["passed"] == now["stream"]["stream_protocol_error_rate"]["total"]


def test_record_with_tool_calls_round_trips():
    rec = live.ResponseRecord(prompt_id="p", mode="stream", repeat=2, content="hi", reasoning="r",
                              tool_calls=[live.ToolCallRecord(name="get_weather", arguments='{"location": "Oslo"}',
                                                              id="c1", index=0)],
                              finish_reason="tool_calls", token_ids=[1, 2], prompt_token_ids=[3],
                              stream_errors=["delta 2, tool call index 0: later delta repeats the name 'x'"])
    assert live.record_from_dict(json.loads(json.dumps(live.record_to_dict(rec)))) == rec


def test_a_bad_records_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "records.jsonl"
    bad.write_text(RECORDS.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(live.LiveRecordsError, match=r"line 2"):
        live.load_records(bad)


def test_live_from_recomputes_metrics_and_drafts_golden_cases_without_a_server(tmp_path):
    rec_dir = tmp_path / "recorded"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", "pyproject.toml", "-m", "gpu", "suites/live/test_live_behaviour.py",
         "--live-from", str(RECORDS), "--live-prompts", str(PROMPTS), "--record-golden", str(rec_dir),
         f"--report-dir={tmp_path / 'reports'}", "-p", "no:randomly", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    summary = json.loads((DATA / "summary.json").read_text())
    # the metrics printed are the ones the original run saved
    assert f"live tier metrics (from {RECORDS})" in out, out[-3000:]
    for mode, metrics in summary["metrics"].items():
        for name, m in metrics.items():
            count = m.get("count", m["passed"])  # summaries written before `count` existed: only minimum metrics
            assert re.search(rf"\[{mode}\] {name}: .*\({count}/{m['total']}[,)]", out), (mode, name, out[-3000:])
    # the test outcomes follow from them: the noise of a random model fails the same thresholds as then
    gate = json.loads((tmp_path / "reports" / "gate.json").read_text())
    outcomes = {k.split("::")[-1]: v for k, v in gate["tests"].items()}
    thresholds = live.load_thresholds()
    for mode in live.MODES:
        for name, m in summary["metrics"][mode].items():
            result = live.MetricResult(name, m["passed"], m["total"], maximum=name in live.MAXIMUM_METRICS)
            ok = result.meets(thresholds[name])
            assert outcomes[f"test_live_metric[{mode}-{name}]"] == ("passed" if ok else "failed"), (mode, name)
    # interleaved thinking judged from the saved rendered prompts; every drafted case loads
    assert outcomes["test_interleaved_thinking_reaches_prompt"] == "passed"
    assert outcomes["test_every_request_was_sent"] == "passed" and outcomes["test_recorded_cases_load"] == "passed"
    from fixtures.golden import load_case

    drafted = sorted(rec_dir.glob("*.yaml"))
    assert len(drafted) == 10
    for path in drafted:
        case = load_case(path)
        assert case.output, path  # the text the server decoded at the time, not a reconstruction
        assert "output from token ids" in path.read_text()
