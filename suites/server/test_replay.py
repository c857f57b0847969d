"""Server tier: the golden corpus through a real `vllm serve` and the `openai` client.

The replay logits processor (fixtures/replay.py) makes the server emit exactly a golden case's
tokens, so the whole serving path — chat template, engine, detokenizer, both parsers, SSE framing,
the OpenAI schema — is checked on known tokens. All cases of one server are replayed at once
(concurrently, stream and non-stream), then each test asserts on its own case.

One thing is not deterministic: a stream's chunking. The API server merges engine outputs when it lags,
so on a loaded machine a parser whose result depends on the chunking streams something the known records
(made token by token) never saw. Such a stream is rerun here through vLLM's own parser on the server's
exact chunking (fixtures.rechunk); when that reproduces it, the cell is judged by what the parser gives
token by token (fixtures.known.judged), and the report says so.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures import rechunk, report
from fixtures.golden import check_answer, normalize_result
from fixtures.known import Observation, error_signature
from fixtures.plugin import golden_corpus
from fixtures.replay_client import not_judged, replay_all
from fixtures.server import configured_timeout
from fixtures.report import record_golden_diff

pytestmark = [pytest.mark.server, pytest.mark.replay]  # replay: skips at a --server-url without the processor

_LOCK = threading.Lock()
_REPLAYS: dict[tuple, dict[str, Any]] = {}


_MARGIN_S = 60.0  # of the test's pytest timeout, kept for judging and teardown after the replay


@pytest.fixture
def replayed(request, server_factory, server_config, reasoning_parser):
    """The server's replay of the whole corpus, once per server; its deadlines fit the pytest timeout of
    the test that runs it (with the boot's allowance, fixtures.server). A replay that raised is kept too:
    every later test of that server reports it at once instead of replaying again."""
    started = time.monotonic()
    endpoint = server_factory(server_config, reasoning_parser)
    key = (server_config, reasoning_parser, endpoint.base_url)
    with _LOCK:
        if key not in _REPLAYS:
            limit = configured_timeout(request.node)
            budget = limit - (time.monotonic() - started) - _MARGIN_S if limit else None
            try:
                _REPLAYS[key] = replay_all(endpoint, golden_corpus(request.config), budget_s=budget,
                                           deadline_scale=request.config.getoption("--replay-deadline-scale"),
                                           stream_interval=request.config.getoption("--replay-stream-interval"))
                # a server started here runs this process's vLLM: its parsers can rerun a stream's chunking
                _REPLAYS[key]["same_vllm"] = endpoint.model_kind != "external"
                _note_if_never_merged(request.config.getoption("--replay-stream-interval"), _REPLAYS[key], endpoint)
            except Exception as exc:  # noqa: BLE001 - kept for every test of this server, judged below
                _REPLAYS[key] = {"raised": f"{type(exc).__name__}: {exc}", "stats": {}}
            if endpoint.log_path is not None:  # the measured speed and deadlines, beside the server's log
                Path(str(endpoint.log_path).removesuffix(".log") + "-replay.json").write_text(
                    json.dumps(_REPLAYS[key]["stats"], indent=1) + "\n")
    replay = _REPLAYS[key]
    request.node.user_properties.extend([("config_id", server_config), ("replay_stats", replay["stats"])])
    if "raised" in replay:
        what = f"the replay of this server's corpus raised {replay['raised']} (server log: {endpoint.log_path})"
        if not_judged(replay["raised"]):  # the speed probe itself timed out: too slow here
            report.inconclusive(what)
        pytest.fail(what, pytrace=False)
    return replay


def _note_if_never_merged(interval: int, replay: dict, endpoint) -> None:
    """A note in the report's findings when --replay-stream-interval merged nothing (vLLM before 0.27)."""
    if interval > 1 and not replay["stats"].get("streams_merged"):
        report.record_finding("note", None, endpoint.reasoning_parser, "stream", None,
                              f"--replay-stream-interval {interval}: the server {endpoint.config_id} streamed every "
                              "replay token by token (a vLLM before 0.27 ignores a per-request stream_interval): no "
                              "stream was checked in merged deltas")


def _observe(request, case, reasoning_parser, out, ids, *, extra=(), record=True) -> Observation:
    """The server tier's one observation of a cell (label `server`). A request that failed outright is
    observed as its error class and HTTP status; one that timed out twice on a slow server is inconclusive.
    `record`: the report keeps its golden diff (one per test)."""
    label = "server"
    if "error" in out:
        if out.get("inconclusive"):  # timed out twice on a slow server (fixtures.replay_client)
            report.inconclusive(f"{case.id}: {out['inconclusive']}")
        stuck = f" ({out['stuck']})" if out.get("stuck") else ""
        return Observation(label, False, {"error": error_signature(out["error"])},
                           [f"[{label}] request failed: {out['error']}{stuck}"])
    want = len(ids) + (1 if case.finish == "stop" else 0)  # the script, then EOS
    usage = [] if out["usage"] == want else [f"usage.completion_tokens {out['usage']} != {want} (script + EOS)"]
    problems, signature = check_answer(
        case, reasoning_parser, out["result"], protocol=list(out["problems"]) + usage,
        record=(lambda expected, got: record_golden_diff(request, case.id, reasoning_parser, label, expected, got))
        if record else None,
    )
    problems += list(extra)
    return Observation(label, not problems, signature, [f"[{label}] {p}" for p in problems])


def test_replay_nonstream(golden_case, reasoning_parser, replayed, golden_verdict, request):
    out = replayed["results"][(golden_case.id, False)]
    obs = _observe(request, golden_case, reasoning_parser, out, replayed["ids"][golden_case.id])
    golden_verdict(golden_case.subject, parser=reasoning_parser, mode="nonstream", tier="server", observations=[obs])


def _differs(out, nonstream) -> list[str]:
    if "error" in out or "error" in nonstream:
        return []
    if normalize_result(out["result"]) == normalize_result(nonstream["result"]):
        return []
    return [f"differs from non-stream: {normalize_result(out['result'])} != {normalize_result(nonstream['result'])}"]


def _merged(request, case, reasoning_parser, tokenizer, out, nonstream, ids, obs: Observation,
            same_vllm: bool) -> None:
    """A stream that came in merged deltas: marked so (`obs.merged`, the test's `server_chunk_sizes`), and -
    from a server running this process's vLLM - rerun through its parser on the server's exact chunking
    (fixtures.rechunk), which gives `obs` its token-by-token stand-in when it reproduces the stream."""
    obs.merged = rechunk.merged_sizes(out)
    if obs.merged is None:
        return
    request.node.user_properties.append(("server_chunk_sizes", obs.merged))
    again = rechunk.rerun(tokenizer, case, reasoning_parser, out, ids) if same_vllm else None
    if again is None:
        return

    def observe(run):
        tbt = {"result": run.result, "problems": run.problems, "usage": out["usage"]}
        return _observe(request, case, reasoning_parser, tbt, ids, extra=_differs(tbt, nonstream), record=False)

    rechunk.give_stand_in(obs, again, case, reasoning_parser, observe)


def test_replay_stream(golden_case, reasoning_parser, replayed, golden_verdict, request, tokenizer):
    out = replayed["results"][(golden_case.id, True)]
    nonstream = replayed["results"][(golden_case.id, False)]
    ids = replayed["ids"][golden_case.id]
    obs = _observe(request, golden_case, reasoning_parser, out, ids, extra=_differs(out, nonstream))
    if "error" not in out:
        _merged(request, golden_case, reasoning_parser, tokenizer, out, nonstream, ids, obs, replayed["same_vllm"])
    golden_verdict(golden_case.subject, parser=reasoning_parser, mode="stream", tier="server", observations=[obs])
