"""Server tier: raw completions, concurrency, and the replay processor's own contract.

Tests marked `replay` need the replay logits processor; against a --server-url endpoint without it they
skip with the reason (fixtures/endpoint.py: check_replay). A plain request runs against any vLLM."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from fixtures.golden import normalize_result
from fixtures.known import normalize_problem
from fixtures.replay import SCRIPT_KEY
from fixtures.replay_client import request
from fixtures.vllm_parsers import EOS_TOKEN, ParserDriver

pytestmark = pytest.mark.server

OUTPUT = (
    "The user wants the weather in Paris.\n</think>\n\n<minimax:tool_call>\n<invoke name=\"get_weather\">\n"
    "<parameter name=\"location\">Paris, 巴黎 🌧</parameter>\n<parameter name=\"days\">3</parameter>\n"
    "</invoke>\n</minimax:tool_call>"
)
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}}}}}]
N_CONCURRENT = 6
STREAM_TIMEOUT_S = 300.0  # each of the 6 streams: ~60 tokens (the server tier measures 100-900 tok/s here)


@pytest.fixture
def endpoint(server_factory, server_config, reasoning_parser, request):
    request.node.user_properties.append(("config_id", server_config))
    return server_factory(server_config, reasoning_parser)


def _script(endpoint, text=OUTPUT):
    return {SCRIPT_KEY: json.dumps(endpoint.tokenize(text))}


@pytest.mark.replay
def test_completions_return_the_raw_text(endpoint):
    client = endpoint.client()
    resp = client.completions.create(
        model=endpoint.model, prompt="]~b]user\nWeather?[e~[\n]~b]ai\n<think>\n", max_tokens=400,
        temperature=0, extra_body={"vllm_xargs": _script(endpoint)},
    )
    assert resp.choices[0].text == OUTPUT, "the tool-call and think tags must stay visible in raw text"
    assert resp.choices[0].finish_reason == "stop"


@pytest.mark.replay
def test_concurrent_replays_are_identical(endpoint, reasoning_parser, tokenizer):
    """Concurrent streams of one script at temperature 1.0 all stream the script's tokens (the processor
    keeps requests apart), and each answer is what vLLM's own parser gives on that stream's chunking (a
    server started here runs this process's vLLM; elsewhere: two streams of one chunking, one answer).
    The chunkings may differ - a loaded API server merges engine outputs - and so may the answers of a
    parser whose result depends on the chunking (golden/README.md, "A server stream in merged deltas")."""
    ids = endpoint.tokenize(OUTPUT)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    body = {"model": endpoint.model, "messages": messages, "tools": TOOLS, "max_tokens": 400, "temperature": 1.0,
            "extra_body": {"vllm_xargs": {SCRIPT_KEY: json.dumps(ids)}}}
    with ThreadPoolExecutor(N_CONCURRENT) as pool:
        outs = list(pool.map(lambda _: request(endpoint, body, stream=True, timeout=STREAM_TIMEOUT_S),
                             range(N_CONCURRENT)))
    streamed = [[t for c in o["engine_chunks"] for t in c] for o in outs]
    assert all(s[:-1] == ids and s == streamed[0] for s in streamed), f"token ids differ: {streamed}"
    assert normalize_result(outs[0]["result"])["tool_calls"], f"no tool call came back: {outs[0]['result']}"

    def answer(result, problems):
        return json.dumps([normalize_result(result), sorted(normalize_problem(p) for p in problems)])

    answers: dict[tuple, set] = {}
    for o in outs:
        answers.setdefault(tuple(len(c) for c in o["engine_chunks"]), set()).add(answer(o["result"], o["problems"]))
    assert all(len(a) == 1 for a in answers.values()), f"one chunking, several answers: {answers}"
    if endpoint.model_kind == "external" or tokenizer.encode(OUTPUT, add_special_tokens=False) != ids:
        return
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    for o in outs:
        run = ParserDriver(tokenizer, reasoning_parser, TOOLS, "auto", messages, o["prompt_ids"],
                           eos_token_id=eos).stream(o["engine_chunks"], add_eos=False)
        assert answer(run.result, run.problems) == answer(o["result"], o["problems"]), \
            f"not what vLLM's parser gives on the stream's chunking {[len(c) for c in o['engine_chunks']]}"


@pytest.mark.replay
@pytest.mark.parametrize("bad", ["[1, \"x\"]", "[]", "not json", "[999999999]"], ids=["non-int", "empty", "not-json", "out-of-vocab"])
def test_bad_replay_script_is_http_400(endpoint, bad):
    with pytest.raises(openai.BadRequestError):
        endpoint.client().chat.completions.create(
            model=endpoint.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
            extra_body={"vllm_xargs": {SCRIPT_KEY: bad}},
        )


def test_requests_without_script_are_untouched(endpoint):
    resp = endpoint.client().completions.create(
        model=endpoint.model, prompt="Hello", max_tokens=6, temperature=1.0, extra_body={"ignore_eos": True},
    )
    assert resp.usage.completion_tokens == 6 and resp.choices[0].finish_reason == "length"
