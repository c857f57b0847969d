"""A server stream that came in merged deltas (fixtures.rechunk, fixtures.known.judged): rerun through vLLM's
own parser on the server's exact chunking and judged by what that parser gives token by token - on the
stream CI once failed as `changed` (a loaded API server merged two engine outputs), and on a real
`vllm serve` asked for merged deltas with --replay-stream-interval."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fixtures import known, rechunk
from fixtures.golden import DEFAULT_CASES_DIR, check_answer, load_case
from fixtures.vllm_parsers import EOS_TOKEN, rendered_prompt

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
CASE = "par-trailing-text-after-block"
PARSER = "minimax_m2_append_think"
# What CI's server streamed for that cell (vLLM 0.32.0, the known record holds it token by token)
CI_RESULT = {
    "reasoning": None,
    "content": "<think>Two searches.Both searches are running; I will summarize the results next.",
    "tool_calls": [{"id": "call_1", "type": "function", "name": "search_web",
                    "arguments_text": '{"query": "rust async book"}', "arguments": {"query": "rust async book"}},
                   {"id": "call_2", "type": "function", "name": "search_web",
                    "arguments_text": '{"query": "tokio tutorial"}', "arguments": {"query": "tokio tutorial"}}],
    "finish_reason": "tool_calls",
}


def _stream(tokenizer, sizes_at: dict[int, int], result=CI_RESULT):
    """The case's stream out as fixtures.replay_client gives it: token by token except an engine output of
    `n` tokens at each position in `sizes_at`, then the EOS alone (its own engine step)."""
    case = load_case(DEFAULT_CASES_DIR / f"{CASE}.yaml")
    ids = tokenizer.encode(case.output, add_special_tokens=False)
    chunks, i = [], 0
    while i < len(ids):
        n = sizes_at.get(i, 1)
        chunks.append(ids[i:i + n])
        i += n
    chunks.append([tokenizer.convert_tokens_to_ids(EOS_TOKEN)])
    out = {"result": result, "problems": [], "usage": len(ids) + 1, "engine_chunks": chunks,
           "prompt_ids": rendered_prompt(tokenizer, case)}
    return case, ids, out


def _judge(case, out, again):
    """The server tier's judgement of a merged stream (suites/server/test_replay.py) against the committed
    records: the stream observed, given its stand-in by fixtures.rechunk, judged by fixtures.known."""
    problems, sig = check_answer(case, PARSER, out["result"], protocol=out["problems"])
    obs = known.Observation("server", not problems, sig, problems)

    def observe(run):
        problems, sig = check_answer(case, PARSER, run.result, protocol=run.problems)
        return known.Observation("server", not problems, sig, problems)

    rechunk.give_stand_in(obs, again, case, PARSER, observe)
    cell = known.load_records()[case.subject].cell(PARSER, "stream")
    return obs, known.judge(cell, [obs], known.load_registry())


def test_ci_s_changed_stream_is_the_parser_on_the_server_s_chunking(tokenizer):
    """CI's server gave '<think>Two searches.Both ...' where the record (token by token) has a newline: the
    parser itself gives exactly that when '\\n' and '</think>' arrive in one engine output, and token by token
    the recorded result. Judged known; the same chunking with another streamed result stays `changed`."""
    case, ids, out = _stream(tokenizer, {9: 2})
    again = rechunk.rerun(tokenizer, case, PARSER, out, ids)
    assert again is not None and again.sizes.count(2) == 1 and len(again.sizes) == len(ids), again.sizes
    assert again.merged.result["content"] == CI_RESULT["content"]
    record = known.load_records()[case.subject].cell(PARSER, "stream").for_label("server")
    _, tbt = check_answer(case, PARSER, again.token_by_token.result, protocol=again.token_by_token.problems)
    assert [v.signature for v in record] == [tbt]
    obs, verdict = _judge(case, out, again)
    assert verdict.kind == "known" and obs.token_by_token is not None, verdict
    assert "which vLLM's own parser reproduces here; judged by what it gives token by token" in verdict.message
    other = {**CI_RESULT, "content": "<think>Two searches. Both searches are running."}
    _, _, out2 = _stream(tokenizer, {9: 2}, other)
    obs, verdict = _judge(case, out2, rechunk.rerun(tokenizer, case, PARSER, out2, ids))
    assert verdict.kind == "changed" and obs.token_by_token is None, verdict
    assert "not what the server streamed" in obs.problems[-1] and "sizes in order" in obs.problems[-1]


def test_no_rerun_token_by_token_or_when_the_ids_are_not_the_script(tokenizer):
    case, ids, out = _stream(tokenizer, {})
    assert rechunk.rerun(tokenizer, case, PARSER, out, ids) is None  # every engine output one token
    _, _, merged = _stream(tokenizer, {9: 2})
    for chunks in ([], [[ids[0]]], merged["engine_chunks"][:-1], [c[::-1] for c in merged["engine_chunks"]]):
        assert rechunk.rerun(tokenizer, case, PARSER, {**merged, "engine_chunks": chunks}, ids) is None
    assert rechunk.rerun(tokenizer, case, PARSER, merged, ids[:-1]) is None
    other_vocab = [1000 + t for t in ids]  # a server whose tokenizer is not this one: nothing to rerun here
    eos = merged["engine_chunks"][-1]
    assert rechunk.rerun(tokenizer, case, PARSER, {**merged, "engine_chunks": [other_vocab, eos]}, other_vocab) is None
    assert rechunk.merged_sizes(out) is None and rechunk.merged_sizes(merged)[9] == 2


@pytest.mark.slow
def test_a_real_server_asked_for_merged_deltas(tmp_path):
    """A real `vllm serve` (tiny CPU model) streams with --replay-stream-interval 3: every stream comes in
    engine outputs of 3 tokens (the first alone), the server's token ids say so, vLLM's parser reproduces each
    stream on that chunking, and the cells are judged as the records hold them: nothing fails."""
    corpus = tmp_path / "cases"
    corpus.mkdir()
    for case in (CASE, "basic-weather-single-invoke"):
        shutil.copy(DEFAULT_CASES_DIR / f"{case}.yaml", corpus)
    report = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites/server/test_replay.py", "-m", "server",
         f"--golden-dir={corpus}", f"--report-dir={report}", "-q", "-k", PARSER, "--replay-stream-interval=3",
         "-rx"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "MINIMAX_SUITE_SERVER_LOG_DIR": str(report / "servers")})
    out = proc.stdout + proc.stderr
    gate = json.loads((report / "gate.json").read_text())
    server = gate["gates"]["server"]
    assert gate["verdict"] == "pass" and server["failed"] == 0 and server["xfailed"] == 4, out[-3000:]
    assert out.count("which vLLM's own parser reproduces here; judged by what it gives token by token") == 2, \
        out[-3000:]
    observed = json.loads((report / "observations.json").read_text())["observations"]
    streams = [o["observations"][0] for o in observed if o["mode"] == "stream"]
    assert len(streams) == 2 and all("token_by_token" in o for o in streams), streams
    sizes = [json.loads(p.get("value").replace("'", '"')) for p in ET.parse(report / "junit.xml").iter("property")
             if p.get("name") == "server_chunk_sizes"]
    # engine outputs end after token 1, 4, 7, ... (stream_interval 3; a lagging server may merge two of them)
    ends = [[sum(s[:i + 1]) for i in range(len(s) - 1)] for s in sizes]
    assert len(sizes) == 2 and all(e and all(n % 3 == 1 for n in e) for e in ends), sizes
    stats = json.loads(next((report / "servers").glob("*-replay.json")).read_text())
    assert stats["stream_interval"] == 3 and stats["streams_merged"] == 2, stats
