"""Server tier: the golden corpus through a real `vllm serve` and the `openai` client.

The replay logits processor (fixtures/replay.py) makes the server emit exactly a golden case's
tokens, so the whole serving path — chat template, engine, detokenizer, both parsers, SSE framing,
the OpenAI schema — is checked deterministically. All cases of one server are replayed at once
(concurrently, stream and non-stream), then each test asserts on its own case.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from fixtures import report
from fixtures.golden import check_answer, normalize_result
from fixtures.known import Observation, error_signature
from fixtures.plugin import golden_corpus
from fixtures.replay_client import NOT_JUDGED, replay_all
from fixtures.report import record_golden_diff

pytestmark = [pytest.mark.server, pytest.mark.replay]  # replay: skips at a --server-url without the processor

_LOCK = threading.Lock()
_REPLAYS: dict[tuple, dict[str, Any]] = {}


@pytest.fixture
def replayed(request, server_factory, server_config, reasoning_parser):
    endpoint = server_factory(server_config, reasoning_parser)
    key = (server_config, reasoning_parser, endpoint.base_url)
    with _LOCK:
        if key not in _REPLAYS:
            replay = replay_all(endpoint, golden_corpus(request.config),
                                deadline_scale=request.config.getoption("--replay-deadline-scale"))
            _REPLAYS[key] = replay
            if endpoint.log_path is not None:  # the measured speed and deadlines, beside the server's log
                Path(str(endpoint.log_path).removesuffix(".log") + "-replay.json").write_text(
                    json.dumps(replay["stats"], indent=1) + "\n")
    request.node.user_properties.extend([("config_id", server_config), ("replay_stats", _REPLAYS[key]["stats"])])
    return _REPLAYS[key]


def _observe(request, case, reasoning_parser, out, ids, *, extra=()) -> Observation:
    """The server tier's one observation of a cell (label `server`). A request that failed outright is
    observed as its error class and HTTP status; one that timed out cannot be judged (inconclusive)."""
    label = "server"
    if "error" in out:
        if out["error"].startswith(NOT_JUDGED):
            report.inconclusive(f"{case.id}: {out.get('inconclusive') or out['error']}")
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
