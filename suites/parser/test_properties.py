"""Property tests of vLLM's MiniMax-M2 parsers against the reference oracle (fixtures/reference.py).

1. Round trip: random tool schemas and argument values, rendered the way MiniMax-M2 writes them,
   must come back equal — non-stream and stream with random batch boundaries.
2. Robustness: random malformed and adversarial outputs never raise and finish within a per-input
   time budget (the parser runs on the server's hot path: catastrophic backtracking is a DoS).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from fixtures.golden import REASONING_PARSERS, canonical_json, normalize_result
from fixtures.reference import parse_output, render_tool_calls
from fixtures.tokenizer import EOS_ID as EOS
from fixtures.vllm_parsers import ParserDriver

pytestmark = pytest.mark.parser

MESSAGES = [{"role": "user", "content": "Go."}]
TIME_BUDGET_S = 2.0  # per adversarial input of at most a few thousand characters, both modes

_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
# Text that the reference gives back unchanged as a string value: no surrounding whitespace, not
# "null", none of the closing tags (MiniMax's format has no escaping), and not the text
# `<parameter name=` (a documented vLLM 0.32 deviation, golden case code-value-parameter-fragments).
_SAFE_TEXT = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>")
        | st.sampled_from(list("<>\n\t")) | st.sampled_from(["北", "京", "🌧", "é", "\"", "'", "&"]),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(lambda s: s and s.lower() != "null")
    .filter(lambda s: all(t not in s for t in ("</parameter", "</invoke", "</minimax:tool_call", "<parameter", "<invoke", "<minimax:", "<think>", "</think>")))
)

_JSON_LEAF = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.none(), _SAFE_TEXT)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAME, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def _param(draw):
    kind = draw(st.sampled_from(["string", "integer", "number", "boolean", "object", "array", "enum"]))
    if kind == "string":
        return {"type": "string"}, draw(_SAFE_TEXT)
    if kind == "integer":
        return {"type": "integer"}, draw(st.integers(-10**9, 10**9))
    if kind == "number":
        value = draw(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)))
        return {"type": "number"}, value
    if kind == "boolean":
        return {"type": "boolean"}, draw(st.booleans())
    if kind == "object":
        return {"type": "object"}, draw(st.dictionaries(_NAME, _JSON, max_size=3))
    if kind == "array":
        return {"type": "array"}, draw(st.lists(_JSON, max_size=4))
    options = draw(st.lists(_NAME, min_size=1, max_size=4, unique=True))
    return {"type": "string", "enum": options}, draw(st.sampled_from(options))


@st.composite
def _calls(draw):
    n_tools = draw(st.integers(1, 3))
    names = draw(st.lists(_NAME, min_size=n_tools, max_size=n_tools, unique=True))
    tools, schemas = [], {}
    for name in names:
        params = draw(st.dictionaries(_NAME, _param(), max_size=4))
        schema = {"type": "object", "properties": {k: s for k, (s, _) in params.items()}}
        schemas[name] = (schema, {k: v for k, (_, v) in params.items()})
        tools.append({"type": "function", "function": {"name": name, "parameters": schema}})
    picked = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3))
    calls = [(name, schemas[name][1]) for name in picked]
    return tools, calls


def _random_chunks(draw, ids):
    chunks, i = [], 0
    while i < len(ids):
        size = draw(st.integers(1, 12))
        chunks.append(ids[i : i + size])
        i += size
    return chunks or [[]]


def _driver(tokenizer, reasoning_parser, tools):
    return ParserDriver(tokenizer, reasoning_parser, tools, "auto", MESSAGES, None, eos_token_id=EOS)


@settings(max_examples=40)
@given(data=st.data(), spec=_calls(), reasoning_parser=st.sampled_from(REASONING_PARSERS))
def test_round_trip_matches_reference(tokenizer, data, spec, reasoning_parser):
    tools, calls = spec
    output = "Plan the calls.\n</think>\n\n" + render_tool_calls(calls, tools)
    note(output)
    expected = normalize_result(parse_output(output, tools, "minimax_m2"))
    assert [(c["name"], c["arguments"]) for c in expected["tool_calls"]] == [
        (n, canonical_json(a)) for n, a in calls
    ], "oracle does not round-trip its own rendering"
    ids = tokenizer.encode(output, add_special_tokens=False)
    driver = _driver(tokenizer, reasoning_parser, tools)
    nonstream = normalize_result(driver.parse(output, ids))
    assert nonstream["tool_calls"] == expected["tool_calls"]
    run = driver.stream(_random_chunks(data.draw, ids))
    assert not run.problems
    assert normalize_result(run.result)["tool_calls"] == expected["tool_calls"]
    assert run.result["finish_reason"] == nonstream["finish_reason"] == "tool_calls"


_FRAGMENTS = [
    "<minimax:tool_call>", "</minimax:tool_call>", "<invoke name=", '<invoke name="', "</invoke>",
    "<parameter name=", '<parameter name="', "</parameter>", "</parameter", "<think>", "</think>",
    '">', "'", '"', ">", "<", "\n", " ", "{", "}", "[", "null", "get_weather", "x" * 50, "北京", "🌧",
]


@settings(max_examples=40)
@given(
    data=st.data(),
    pieces=st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=20), min_size=1, max_size=200),
    reasoning_parser=st.sampled_from(REASONING_PARSERS),
)
def test_malformed_output_never_raises(tokenizer, data, pieces, reasoning_parser):
    output = "".join(pieces)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}}}}}]
    ids = tokenizer.encode(output, add_special_tokens=False)
    driver = _driver(tokenizer, reasoning_parser, tools)
    start = time.perf_counter()
    driver.parse(output, ids, engine_finish=data.draw(st.sampled_from(["stop", "length"])))
    driver.stream(_random_chunks(data.draw, ids))
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BUDGET_S, f"{elapsed:.2f} s for {len(output)} characters"


ADVERSARIAL = {
    "unclosed-parameters": '<minimax:tool_call>\n<invoke name="get_weather">\n' + '<parameter name="location">a' * 400,
    "unclosed-invokes": "<minimax:tool_call>\n" + '<invoke name="get_weather">' * 400,
    "parameter-name-lookalikes": '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="location">'
    + "<parameter name= " * 400 + "</parameter>\n</invoke>\n</minimax:tool_call>",
    "spaces-in-tags": "<minimax:tool_call>" + "< parameter  name = " + " " * 3000,
    "think-flood": "</think>" * 800 + "<minimax:tool_call>" * 200,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_output_within_budget(tokenizer, name, reasoning_parser):
    output = "Thinking.\n</think>\n" + ADVERSARIAL[name]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}}}}]
    ids = tokenizer.encode(output, add_special_tokens=False)
    driver = _driver(tokenizer, reasoning_parser, tools)
    start = time.perf_counter()
    driver.parse(output, ids, engine_finish="length")
    driver.stream([ids[i : i + 4] for i in range(0, len(ids), 4)], engine_finish="length")
    elapsed = time.perf_counter() - start
    assert elapsed < 4 * TIME_BUDGET_S, f"{name}: {elapsed:.2f} s for {len(output)} characters, {len(ids)} tokens"
