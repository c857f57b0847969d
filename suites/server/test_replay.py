"""Server tier: the golden corpus through a real `vllm serve` and the `openai` client.

The replay logits processor (fixtures/replay.py) makes the server emit exactly a golden case's
tokens, so the whole serving path — chat template, engine, detokenizer, both parsers, SSE framing,
the OpenAI schema — is checked deterministically. All cases of one server are replayed at once
(concurrently, stream and non-stream), then each test asserts on its own case.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fixtures.assemble import StreamAssembler, message_result
from fixtures import report
from fixtures.golden import GoldenCase, check_answer, normalize_result
from fixtures.known import Observation, error_signature
from fixtures.report import record_golden_diff
from fixtures.replay import SCRIPT_KEY

pytestmark = pytest.mark.server

CONCURRENCY = 48
REQUEST_TIMEOUT_S = 300
_LOCK = threading.Lock()
_REPLAYS: dict[tuple, dict[str, Any]] = {}


def _request(endpoint, case: GoldenCase, ids: list[int], *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": case.messages,
        "temperature": 0,
        "max_tokens": len(ids) if case.finish == "length" else len(ids) + 8,
        "extra_body": {"vllm_xargs": {SCRIPT_KEY: json.dumps(ids)}},
    }
    if case.tools:
        body["tools"] = case.tools
        body["tool_choice"] = case.tool_choice
    client = endpoint.client(timeout=REQUEST_TIMEOUT_S)
    if not stream:
        resp = client.chat.completions.create(**body)
        choice = resp.choices[0]
        return {
            "result": message_result(choice.message.model_dump(), choice.finish_reason),
            "usage": resp.usage.completion_tokens if resp.usage else None,
            "problems": [],
        }
    asm = StreamAssembler()
    usage = None
    chunks = client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            asm.feed(choice.delta.model_dump(exclude_none=True), choice.finish_reason)
    return {"result": asm.result(), "usage": usage, "problems": asm.problems, "n_chunks": asm.n_deltas}


def _replay_all(endpoint, cases: list[GoldenCase]) -> dict[str, Any]:
    ids = {c.id: endpoint.tokenize(c.output) for c in cases}

    def run(args):
        case, stream = args
        try:
            return (case.id, stream), _request(endpoint, case, ids[case.id], stream=stream)
        except Exception as exc:  # noqa: BLE001 - reported by the case's own test
            return (case.id, stream), {"error": f"{type(exc).__name__}: {exc}"}

    jobs = [(c, s) for c in cases for s in (False, True)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = dict(pool.map(run, jobs))
    return {"ids": ids, "results": results}


@pytest.fixture
def replayed(request, server_factory, server_config, reasoning_parser):
    endpoint = server_factory(server_config, reasoning_parser)
    key = (server_config, reasoning_parser, endpoint.base_url)
    with _LOCK:
        if key not in _REPLAYS:
            from conftest import golden_corpus

            _REPLAYS[key] = _replay_all(endpoint, golden_corpus(request.config))
    request.node.user_properties.append(("config_id", server_config))
    return _REPLAYS[key]


_NOT_JUDGED = ("APITimeoutError", "APIConnectionError")  # the server was too slow or gone: no verdict on vLLM


def _observe(request, case, reasoning_parser, out, ids, *, extra=()) -> Observation:
    """The server tier's one observation of a cell (label `server`). A request that failed outright is
    observed as its error class and HTTP status; one that timed out cannot be judged (inconclusive)."""
    label = "server"
    if "error" in out:
        if out["error"].startswith(_NOT_JUDGED):
            report.inconclusive(f"{case.id}: {out['error']}")
        return Observation(label, False, {"error": error_signature(out["error"])},
                           [f"[{label}] request failed: {out['error']}"])
    want = len(ids) + (1 if case.finish == "stop" else 0)  # the script, then EOS
    usage = [] if out["usage"] == want else [f"usage.completion_tokens {out['usage']} != {want} (script + EOS)"]
    problems, signature = check_answer(
        case, reasoning_parser, out["result"], protocol=list(out["problems"]) + usage,
        record=lambda expected, got: record_golden_diff(request, case.id, reasoning_parser, label, expected, got),
    )
    problems += list(extra)
    return Observation(label, not problems, signature, [f"[{label}] {p}" for p in problems])


def test_replay_nonstream(golden_case, reasoning_parser, replayed, golden_verdict, request):
    out = replayed["results"][(golden_case.id, False)]
    obs = _observe(request, golden_case, reasoning_parser, out, replayed["ids"][golden_case.id])
    golden_verdict(golden_case.subject, parser=reasoning_parser, mode="nonstream", tier="server", observations=[obs])


def test_replay_stream(golden_case, reasoning_parser, replayed, golden_verdict, request):
    out = replayed["results"][(golden_case.id, True)]
    nonstream = replayed["results"][(golden_case.id, False)]
    extra = []
    if "error" not in out and "error" not in nonstream:
        if normalize_result(out["result"]) != normalize_result(nonstream["result"]):
            extra.append(f"differs from non-stream: {normalize_result(out['result'])} "
                         f"!= {normalize_result(nonstream['result'])}")
    obs = _observe(request, golden_case, reasoning_parser, out, replayed["ids"][golden_case.id], extra=extra)
    golden_verdict(golden_case.subject, parser=reasoning_parser, mode="stream", tier="server", observations=[obs])
