"""The live tier's machinery on CPU: prompt set, message building, response records, stream
reassembly, metrics (pass, fail and edge cases) and record mode, with hand-made responses."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from fixtures import golden, known, live
from fixtures.live.store import record_from_dict
from fixtures.live import (
    LiveDataError,
    LivePrompt,
    LiveSettings,
    RecordsWriter,
    ResponseRecord,
    ToolCallRecord,
)

pytestmark = pytest.mark.harness

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["location"],
        },
    },
}
WRITE = {
    "type": "function",
    "function": {
        "name": "write_file",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
}

CALL_P = LivePrompt(id="call-p", lang="en", messages=[{"role": "user", "content": "Weather in Paris?"}],
                    tools=[WEATHER], must_call=("get_weather",), must_contain_args={"get_weather": {"location": "Paris"}})
PAR_P = LivePrompt(id="par-p", lang="en", messages=[{"role": "user", "content": "Paris and Rome?"}],
                   tools=[WEATHER], must_call=("get_weather",), parallel=True)
NO_P = LivePrompt(id="no-p", lang="zh", messages=[{"role": "user", "content": "你好"}], tools=[WEATHER], must_not_call=True)
CODE_P = LivePrompt(id="code-p", lang="en", messages=[{"role": "user", "content": "write"}], tools=[WRITE],
                    must_call=("write_file",), min_arg_lines={"write_file": {"content": 5}})
PROMPTS = [CALL_P, PAR_P, NO_P, CODE_P]


def call(name="get_weather", args='{"location": "Paris"}', **kw) -> ToolCallRecord:
    return ToolCallRecord(name=name, arguments=args, id=kw.pop("id", "call_1"), **kw)


def rec(pid="call-p", calls=(), content=None, reasoning="thinking", finish=None, mode="nonstream", repeat=0,
        ok=True) -> ResponseRecord:
    calls = list(calls)
    if finish is None:
        finish = "tool_calls" if calls else "stop"
    return ResponseRecord(prompt_id=pid, mode=mode, repeat=repeat, ok=ok, content=content, reasoning=reasoning,
                          tool_calls=calls, finish_reason=finish if ok else None, error=None if ok else "boom")


# ------------------------------------------------------------------------------ data files


def test_default_prompt_set_is_rich_enough():
    prompts = live.load_prompts()
    assert len(prompts) >= 40
    langs = {p.lang for p in prompts}
    assert langs == {"en", "zh"}
    assert sum(p.lang == "zh" for p in prompts) >= 10
    assert sum(bool(p.must_contain_args) for p in prompts) >= 15
    assert sum(p.parallel for p in prompts) >= 5
    assert sum(p.must_not_call for p in prompts) >= 5
    assert sum(p.multi_turn for p in prompts) >= 5
    assert any(p.multi_turn and p.must_call for p in prompts) and any(p.multi_turn and p.must_not_call for p in prompts)
    assert sum(bool(p.min_arg_lines) for p in prompts) >= 3
    assert {json.dumps(p.tool_choice) for p in prompts} >= {'"auto"', '"none"', '"required"'}
    assert any(isinstance(p.tool_choice, dict) for p in prompts)
    # multi-turn prompts carry earlier reasoning, which must go back to the model
    assert all(any(m.get("reasoning") for m in p.messages if m["role"] == "assistant")
               for p in prompts if p.multi_turn)


def test_prompt_expectations_fit_the_tool_schemas():
    """Every must_contain_args value is itself valid for its parameter, so a correct call can match."""
    for p in live.load_prompts():
        for tool, args in p.must_contain_args.items():
            props = p.tool_schema(tool)["properties"]
            for arg, value in args.items():
                assert arg in props, (p.id, tool, arg)
                jsonschema.validate(value, props[arg])
        for tool, mins in p.min_arg_lines.items():
            for arg in mins:
                assert p.tool_schema(tool)["properties"][arg]["type"] == "string", (p.id, tool, arg)


def test_default_thresholds():
    t = live.load_thresholds()
    assert t["query_success_rate"] == 1.0
    assert t["finish_with_tool_calls_rate"] == 1.0
    assert t["trigger_agreement_rate"] == 0.98
    assert t["tool_call_accuracy"] == 0.98
    assert t["not_only_reasoning_rate"] == 1.0
    assert t["stream_protocol_error_rate"] == 0
    assert set(t) == set(live.METRICS)
    # every metric's check can fail: no threshold is null
    assert all(v is not None for v in t.values())


@pytest.mark.parametrize("bad", [
    {"query_success_rate": 1.5},
    {"trigger_agreement_rate": "98%"},
    {"nonsense": 0.5},
])
def test_bad_thresholds_rejected(bad):
    data = {**live.load_thresholds(), **bad}
    with pytest.raises(LiveDataError, match="field"):
        live.parse_thresholds(data, "t.yaml")


def _doc(**prompt):
    base = {"id": "x", "lang": "en", "messages": [{"role": "user", "content": "hi"}], "tools": ["get_weather"],
            "must_not_call": True}
    base.update(prompt)
    return {"tools": {"get_weather": WEATHER}, "prompts": [{k: v for k, v in base.items() if v is not None}]}


@pytest.mark.parametrize("change, message", [
    ({"must_not_call": None}, "exactly one of"),
    ({"must_call": ["get_weather"]}, "exactly one of"),
    ({"must_not_call": None, "must_call": ["send_email"]}, "not offered"),
    ({"tools": ["send_email"]}, "not in the tools library"),
    ({"id": "Bad Id"}, "field prompts.0.id"),
    ({"lang": "fr"}, "field prompts.0.lang"),
    ({"must_not_call": None, "must_call": ["get_weather"], "tool_choice": "none"}, "tool_choice none"),
    ({"tool_choice": "required"}, "tool_choice required"),
    ({"must_contain_args": {"get_weather": {"location": "x"}}}, "not in must_call"),
    ({"parallel": True}, "parallel needs must_call"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}]},
     "tool_call_id"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "last message"),
])
def test_bad_prompts_rejected(change, message):
    with pytest.raises(LiveDataError, match=message):
        live.parse_prompts(_doc(**change), "p.yaml")


def test_duplicate_prompt_ids_rejected():
    doc = _doc()
    doc["prompts"].append(dict(doc["prompts"][0]))
    with pytest.raises(LiveDataError, match="duplicate id"):
        live.parse_prompts(doc, "p.yaml")


# ---------------------------------------------------------------------- interleaved thinking


MT = LivePrompt(
    id="mt", lang="en", tools=[WEATHER], must_not_call=True,
    messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "reasoning": "Call the tool.", "content": "",
         "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"location": "Paris", "days": 2}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ],
)


def test_history_reasoning_content_style():
    msgs = live.build_messages(MT, "reasoning_content")
    a = msgs[1]
    assert a["reasoning_content"] == "Call the tool." and a["content"] == ""
    assert a["tool_calls"] == [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"location": "Paris", "days": 2}'}}]
    assert msgs[0] == MT.messages[0] and msgs[2] == MT.messages[2]
    assert "reasoning" not in a


def test_history_think_in_content_style():
    a = live.build_messages(MT, "think_in_content")[1]
    assert a["content"] == "<think>\nCall the tool.\n</think>\n\n"
    assert "reasoning_content" not in a and a["tool_calls"][0]["function"]["name"] == "get_weather"
    with pytest.raises(ValueError):
        live.build_messages(MT, "nope")


def test_history_style_detection():
    assert live.detect_history_style("minimax_m2") == "reasoning_content"
    assert live.detect_history_style("minimax_m2_append_think") == "think_in_content"
    assert live.detect_history_style(None, lambda: rec(pid="x", reasoning="r", content="hi")) == "reasoning_content"
    assert live.detect_history_style(None, lambda: rec(pid="x", reasoning=None, content="<think>r</think>hi")) \
        == "think_in_content"
    assert live.detect_history_style(None, lambda: rec(pid="x", ok=False)) == "think_in_content"


# --------------------------------------------------------------------------------- records


def test_record_from_nonstream_response():
    data = {
        "choices": [{
            "index": 0, "finish_reason": "tool_calls", "token_ids": [1, 2, 3],
            "message": {"role": "assistant", "content": None, "reasoning": "think",
                        "tool_calls": [{"id": "call_a", "type": "function",
                                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]},
        }],
        "prompt_token_ids": [9, 9],
    }
    r = live.record_from_response(data, prompt_id="call-p", repeat=2)
    assert r.ok and r.mode == "nonstream" and r.repeat == 2
    assert r.reasoning == "think" and r.content is None and r.finish_reason == "tool_calls"
    assert [(c.name, c.arguments, c.id, c.type) for c in r.tool_calls] == [
        ("get_weather", '{"location": "Paris"}', "call_a", "function")]
    assert r.token_ids == [1, 2, 3] and r.prompt_token_ids == [9, 9]
    # reasoning_content (older vLLM) is read too
    data["choices"][0]["message"] = {"content": "hi", "reasoning_content": "old"}
    assert live.record_from_response(data, prompt_id="x").reasoning == "old"


@pytest.mark.parametrize("data, error", [
    ({"choices": []}, "no choices"),
    ({"choices": [{"message": {"content": "x"}, "finish_reason": None}]}, "no finish_reason"),
])
def test_record_from_bad_nonstream_response(data, error):
    r = live.record_from_response(data, prompt_id="x")
    assert not r.ok and error in r.error


def chunk(delta=None, finish=None, token_ids=None, **top):
    c = {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, "token_ids": token_ids}]}
    c.update(top)
    return c


def tc(index, args=None, name=None, id=None, type=None):
    return {"index": index, "id": id, "type": type, "function": {"name": name, "arguments": args}}


def test_stream_reassembly_by_index():
    chunks = [
        chunk({"role": "assistant", "content": ""}, token_ids=[1], prompt_token_ids=[7, 8]),
        chunk({"reasoning": "Two "}, token_ids=[2]),
        chunk({"reasoning": "cities."}, token_ids=[3]),
        chunk({"content": "\n\n"}),
        chunk({"tool_calls": [tc(0, None, "get_weather", "call_0", "function")]}, token_ids=[4]),
        chunk({"tool_calls": [tc(0, '{"location": ')]}),
        chunk({"tool_calls": [tc(0, '"Paris"}'), tc(1, "", "get_weather", "call_1", "function")]}),
        chunk({"tool_calls": [tc(1, '{"location": "Rome"}')]}),
        chunk({}, finish="tool_calls", token_ids=[5, 6]),
        {"choices": [], "usage": {"completion_tokens": 6}},
    ]
    r = live.record_from_chunks(chunks, prompt_id="par-p", repeat=1)
    assert r.ok and r.mode == "stream" and r.finish_reason == "tool_calls"
    assert r.reasoning == "Two cities." and r.content == "\n\n"
    assert [(c.index, c.id, c.name, json.loads(c.arguments)) for c in r.tool_calls] == [
        (0, "call_0", "get_weather", {"location": "Paris"}),
        (1, "call_1", "get_weather", {"location": "Rome"}),
    ]
    assert r.stream_errors == []
    assert r.token_ids == [1, 2, 3, 4, 5, 6] and r.prompt_token_ids == [7, 8]
    m = live.compute_metrics([r], PROMPTS)
    assert all(res.rate == (0.0 if res.maximum else 1.0) for res in m.values() if res.total), \
        {k: v.summary() for k, v in m.items()}


def test_stream_protocol_problems_are_kept_and_counted():
    """The record holds what StreamAssembler reassembles and every problem it lists; the problems fail
    stream_protocol_error_rate (threshold: at most 0), whatever the reassembled calls look like."""
    chunks = [
        chunk({"tool_calls": [tc(0, '{"location": "Pa')]}),  # no id, type or name first
        chunk({"tool_calls": [tc(0, 'ris"}', "get_weather", "call_x")]}),  # the name only later
        chunk({"tool_calls": [tc(1, "{}", "get_weather", "call_y", "function")]}),
        chunk({"tool_calls": [tc(1, "", "write_file")]}),  # later delta sends a (different) name
        chunk({}, finish="tool_calls"),
    ]
    r = live.record_from_chunks(chunks, prompt_id="call-p")
    assert r.ok and [c.name for c in r.tool_calls] == [None, "get_weather"]  # the first delta names the call
    assert json.loads(r.tool_calls[0].arguments) == {"location": "Paris"}
    errors = "\n".join(r.stream_errors)
    for problem in ("index 0: first delta has no id", "index 0: first delta has no function name",
                    "index 0: later delta changes the id", "index 1: later delta repeats the name 'write_file'"):
        assert problem in errors, errors
    res = live.stream_protocol_error_rate([r])
    assert (res.count, res.total, res.rate) == (1, 1, 1.0) and not res.meets(live.load_thresholds()[res.name])
    assert "first delta has no id" in res.failure_message(0) and "above threshold 0.00%" in res.failure_message(0)


def test_recorded_protocol_problems_are_known_not_counted():
    """The index gap after a dropped unknown tool is recorded known vLLM behaviour (golden/known, finding
    stream-index-gap-after-dropped-call): at temperature 1.0 a live answer may meet it; it is listed as known
    with its finding, never counted - any other protocol problem of the same record still is."""
    kp = known.known_problems(known.load_records())
    gap = live.record_from_chunks([chunk({"tool_calls": [tc(1, "{}", "get_weather", "c", "function")]}),
                                   chunk({}, finish="tool_calls")], prompt_id="call-p")
    res = live.stream_protocol_error_rate([gap], kp)
    assert (res.count, res.total) == (0, 1) and res.meets(0)
    assert "stream-index-gap-after-dropped-call" in res.known[0].reason and "1 known" in res.summary()
    assert live.stream_protocol_error_rate([gap]).count == 1, "without the known records it counts"
    worse = live.record_from_chunks([chunk({"tool_calls": [tc(1, "{}", "get_weather", "c", "function")]}),
                                     chunk({"tool_calls": [tc(1, "", "get_weather")]}),
                                     chunk({}, finish="tool_calls")], prompt_id="call-p")
    res = live.stream_protocol_error_rate([worse], kp)
    assert res.count == 1 and "repeats the name" in res.failure_message(0) and "index skips" not in res.failure_message(0)


def test_records_saved_before_stream_errors_keep_their_defects():
    """A records.jsonl line of the earlier format kept a stream's problems per tool call: read back, they are
    the record's stream_errors (a defect is not read back as a clean stream)."""
    old = {"prompt_id": "call-p", "mode": "stream", "ok": True, "finish_reason": "tool_calls",
           "tool_calls": [{"name": "get_weather", "arguments": "{}", "problems": ["first delta has no id"]}]}
    r = record_from_dict(old)
    assert r.stream_errors == ["first delta has no id"]
    assert live.stream_protocol_error_rate([r]).count == 1


def test_stream_without_finish_reason_is_a_failed_query():
    r = live.record_from_chunks([chunk({"content": "Hel"}), chunk({"content": "lo"})], prompt_id="no-p")
    assert not r.ok and "finish_reason" in r.error and r.content == "Hello"
    assert live.query_success_rate([r]).rate == 0.0


def test_stream_indices_must_be_dense():
    r = live.record_from_chunks([chunk({"tool_calls": [tc(1, "{}", "get_weather", "c", "function")]}),
                                 chunk({}, finish="tool_calls")], prompt_id="call-p")
    assert any("index skips (expected 0)" in p for p in r.stream_errors)


# --------------------------------------------------------------------------------- metrics


def test_all_metrics_pass_on_good_records():
    records = [
        rec("call-p", [call()]),
        rec("call-p", [call(args='{"location": "Paris, France", "unit": "celsius"}')], mode="stream"),
        rec("par-p", [call(), call(args='{"location": "Rome"}', id="call_2")]),
        rec("no-p", content="你好！"),
        rec("code-p", [call("write_file", json.dumps({"path": "a.py", "content": "\n".join("x" * 6)}))]),
    ]
    m = live.compute_metrics(records, PROMPTS)
    thresholds = live.load_thresholds()
    for name, res in m.items():
        assert res.rate == (0.0 if res.maximum else 1.0), res.summary()
        assert res.offenses == () and res.meets(thresholds[name]), res.summary()
    assert m["query_success_rate"].total == 5
    assert m["tool_call_accuracy"].total == 5
    assert m["trigger_agreement_rate"].total == 5
    assert m["expectation_match_rate"].total == 4


def test_query_success_failures():
    res = live.query_success_rate([rec(), rec(ok=False, repeat=1), rec(ok=False, repeat=2)])
    assert (res.passed, res.total) == (1, 3)
    assert res.offending_prompt_ids() == ["call-p"]
    assert not res.meets(1.0) and res.meets(0.3)


def test_failed_queries_are_left_out_of_the_other_metrics():
    m = live.compute_metrics([rec(ok=False), rec("no-p", ok=False)], PROMPTS)
    assert m["query_success_rate"].rate == 0.0
    for name in ("trigger_agreement_rate", "tool_call_accuracy", "not_only_reasoning_rate",
                 "expectation_match_rate", "finish_with_tool_calls_rate"):
        assert m[name].total == 0 and m[name].rate is None and m[name].meets(1.0)


def test_finish_with_tool_calls():
    res = live.finish_with_tool_calls_rate([
        rec(calls=[call()]), rec(calls=[call()], finish="stop", repeat=1), rec("no-p", content="hi"),
    ], PROMPTS)
    assert (res.passed, res.total) == (1, 2)
    assert "finish_reason 'stop', expected 'tool_calls'" in res.offenses[0].reason


def test_finish_with_tool_calls_fails_below_its_threshold():
    """The threshold is real: one answer in a hundred with calls and the wrong finish_reason fails it."""
    threshold = live.load_thresholds()["finish_with_tool_calls_rate"]
    good = [rec(calls=[call()], repeat=i) for i in range(99)]
    assert live.finish_with_tool_calls_rate(good, PROMPTS).meets(threshold)
    res = live.finish_with_tool_calls_rate(good + [rec(calls=[call()], finish="stop", repeat=99)], PROMPTS)
    assert res.rate == 0.99 and not res.meets(threshold)
    assert "below threshold 100.00%" in res.failure_message(threshold)


def test_finish_with_tool_calls_follows_the_openai_rules():
    """A tool_choice naming the function finishes with "stop" (OpenAI's rule, which vLLM follows); an
    answer cut off at max_tokens truthfully says "length" and is not judged here."""
    named = LivePrompt(id="named-p", lang="en", messages=[{"role": "user", "content": "t"}], tools=[WEATHER],
                       tool_choice={"type": "function", "function": {"name": "get_weather"}}, must_call=("get_weather",))
    res = live.finish_with_tool_calls_rate([
        rec("named-p", [call()], finish="stop"),
        rec("named-p", [call()], finish="tool_calls", repeat=1),
        rec("call-p", [call()], finish="length", repeat=2),
    ], [named, CALL_P])
    assert (res.passed, res.total) == (1, 1 + 1)
    assert "expected 'stop'" in res.offenses[0].reason and res.offenses[0].repeat == 1


def test_trigger_agreement():
    records = [
        rec("call-p", content="It is sunny."),           # must_call, not called
        rec("no-p", [call()]),                           # must_not_call, called
        rec("call-p", [call("unknown_tool", "{}")]),     # called (accuracy judges the call)
        rec("no-p", content="hi"),
    ]
    res = live.trigger_agreement_rate(records, PROMPTS)
    assert (res.passed, res.total) == (2, 4)
    assert res.offending_prompt_ids() == ["call-p", "no-p"]
    msg = res.failure_message(0.98)
    assert "below threshold 98.00%" in msg and "offending prompt ids: call-p, no-p" in msg
    assert "expected no tool call" in msg and "no tool call; expected a call" in msg


@pytest.mark.parametrize("bad_call, reason", [
    (call("get_wether"), "unknown tool name"),
    (call(name=None), "unknown tool name"),
    (call(args='{"location": "Paris"'), "not JSON"),
    (call(args=""), "not JSON"),
    (call(args=None), "not JSON"),
    (call(args='["Paris"]'), "not an object"),
    (call(args="{}"), "'location' is a required property"),
    (call(args='{"location": 3}'), "schema violation at location"),
    (call(args='{"location": "P", "unit": "kelvin"}'), "schema violation at unit"),
    (call(args='{"location": "P", "days": "3"}'), "schema violation at days"),
    (call(args='{"location": "P", "days": 3.5}'), "schema violation at days"),
])
def test_tool_call_accuracy_failures(bad_call, reason):
    res = live.tool_call_accuracy([rec(calls=[call(), bad_call])], PROMPTS)
    assert (res.passed, res.total) == (1, 2)
    assert reason in res.offenses[0].reason and res.offenses[0].reason.startswith("call 1:")


def test_tool_call_accuracy_threshold_arithmetic():
    records = [rec(calls=[call()], repeat=i) for i in range(49)] + [rec(calls=[call(args="{")], repeat=49)]
    res = live.tool_call_accuracy(records, PROMPTS)
    assert res.rate == 0.98 and res.meets(0.98) and not res.meets(0.99)


@pytest.mark.parametrize("content, reasoning, calls, ok", [
    ("The answer is 42.", "r", [], True),
    (None, "r", [call()], True),
    ("", None, [], False),                                    # empty answer
    (None, None, [], False),
    ("   \n", "long thoughts", [], False),                    # reasoning only
    ("<think>\nlong thoughts\n</think>\n\n", None, [], False),  # append_think: reasoning only
    ("<think>\nthoughts\n</think>\n\nHello!", None, [], True),
    ("<think>\nthoughts cut off by max_tokens", None, [], False),
    ("thoughts</think>Hi", None, [], True),                   # stray </think>
])
def test_not_only_reasoning(content, reasoning, calls, ok):
    r = rec("no-p", calls, content=content, reasoning=reasoning, finish="length" if not ok else None)
    res = live.not_only_reasoning_rate([r])
    assert res.rate == (1.0 if ok else 0.0), res.offenses


def test_not_only_reasoning_names_empty_answers():
    res = live.not_only_reasoning_rate([rec("no-p", content=None, reasoning=None)])
    assert "empty answer" in res.offenses[0].reason
    res = live.not_only_reasoning_rate([rec("no-p", content=None, reasoning="hmm")])
    assert "reasoning only" in res.offenses[0].reason


@pytest.mark.parametrize("expected, actual, match", [
    ("Paris", "Paris, France", True),
    ("paris", "PARIS", True),
    ("Paris", "Rome", False),
    ("10086", 10086, False),
    (250, 250, True),
    (250, 250.0, True),
    (250, "250", False),
    (True, True, True),
    (True, "true", False),
    (1, True, False),
    (["a@x.com"], ["a@x.com"], True),
    (["a@x.com"], "a@x.com", False),
])
def test_value_matches(expected, actual, match):
    assert live.value_matches(expected, actual) is match


def test_expectation_match():
    records = [
        rec("call-p", [call(args='{"location": "Rome"}')]),                     # wrong argument
        rec("call-p", [call("write_file", "{}")]),                               # wrong tool
        rec("par-p", [call()]),                                                  # one call, parallel expected
        rec("code-p", [call("write_file", '{"path": "a.py", "content": "x\\ny"}')]),  # too short
        rec("code-p", [call("write_file", '{"path": "a.py", "content": 5}')]),   # not a string
        rec("call-p", [call(args="{oops")]),                                     # arguments unreadable
        rec("call-p", content="no call"),                                        # no call at all
        rec("no-p", [call()]),                                                   # not a must_call prompt
    ]
    res = live.expectation_match_rate(records, PROMPTS)
    assert (res.passed, res.total) == (0, 7)
    reasons = [o.reason for o in res.offenses]
    assert "no call with arguments {'location': 'Paris'}" in reasons[0]
    assert "missing call(s) to ['get_weather']" in reasons[1]
    assert "parallel" in reasons[2]
    assert "at least 5 lines, got [2]" in reasons[3]
    assert "at least 5 lines, got []" in reasons[4]
    assert "no call with arguments" in reasons[5]
    assert "missing call" in reasons[6]


def test_failure_message_groups_by_prompt():
    records = [rec("call-p", content="x", mode=m, repeat=i) for m in ("stream", "nonstream") for i in range(2)]
    res = live.trigger_agreement_rate(records + [rec("call-p", [call()])], PROMPTS)
    msg = res.failure_message(0.98)
    assert "offending prompt ids: call-p" in msg
    assert "call-p (4x: stream#0, stream#1, nonstream#0, nonstream#1)" in msg
    assert msg.count("no tool call") == 1  # one line per distinct reason


def test_empty_record_list():
    for res in live.compute_metrics([], PROMPTS).values():
        assert res.total == 0 and res.rate is None and res.meets(1.0)
        assert "n/a" in res.summary()


# -------------------------------------------------------------- requests, with a fake client


class FakeCompletions:
    def __init__(self, script):
        self.script = script
        self.calls = []

    def create(self, **kw):
        self.calls.append(kw)
        outcome = self.script(kw)
        if isinstance(outcome, Exception):
            raise outcome
        if kw["stream"]:
            return iter([SimpleNamespace(model_dump=lambda c=c: c) for c in outcome["chunks"]])
        return SimpleNamespace(model_dump=lambda: outcome["response"])


def fake_client(script):
    comp = FakeCompletions(script)
    return SimpleNamespace(chat=SimpleNamespace(completions=comp)), comp


def test_run_all_sends_every_prompt_repeat_and_mode():
    def script(kw):
        if kw["messages"][-1]["content"] == "你好":
            raise TimeoutError("read timed out")
        args = '{"location": "Paris"}'
        return {
            "response": {"choices": [{"finish_reason": "tool_calls", "message": {"content": None, "reasoning": "r",
                         "tool_calls": [{"id": "c", "type": "function",
                                         "function": {"name": "get_weather", "arguments": args}}]}}]},
            "chunks": [chunk({"tool_calls": [tc(0, args, "get_weather", "c", "function")]}), chunk({}, "tool_calls")],
        }

    client, comp = fake_client(script)
    settings = LiveSettings(repeat=2, concurrency=3, temperature=0.7, top_p=0.9, top_k=20, max_tokens=123)
    records = live.run_all(client, [CALL_P, NO_P], settings, "reasoning_content", model="m", return_token_ids=True)
    assert len(records) == 8 == len(comp.calls)
    assert {(r.prompt_id, r.mode, r.repeat) for r in records} == {
        (p, m, i) for p in ("call-p", "no-p") for m in live.MODES for i in range(2)}
    kw = comp.calls[0]
    assert (kw["temperature"], kw["top_p"], kw["max_tokens"], kw["model"]) == (0.7, 0.9, 123, "m")
    assert kw["extra_body"] == {"top_k": 20, "return_token_ids": True}
    assert kw["tools"] == [WEATHER] and kw["tool_choice"] == "auto"
    failed = [r for r in records if not r.ok]
    assert {r.prompt_id for r in failed} == {"no-p"} and len(failed) == 4
    assert all("TimeoutError: read timed out" in r.error for r in failed)
    good = [r for r in records if r.ok]
    assert all(r.messages and r.tool_calls[0].name == "get_weather" for r in good)
    m = live.compute_metrics(records, [CALL_P, NO_P])
    assert m["query_success_rate"].rate == 0.5 and m["tool_call_accuracy"].rate == 1.0


def test_a_stream_defect_is_recorded_and_fails_the_live_gate(tmp_path):
    """A server whose later tool-call delta repeats the call's name (record_from_chunks used to accept it):
    through the live recording (request, reassembly, records.jsonl, --live-from reading) the defect stays on
    the record, stream_protocol_error_rate counts it and fails its threshold, and the metrics that judge the
    reassembled answer are not changed by it."""
    args = '{"location": "Paris"}'

    def script(kw):
        return {"chunks": [chunk({"tool_calls": [tc(0, "", "get_weather", "call_1", "function")]}),
                           chunk({"tool_calls": [tc(0, args, "get_weather")]}),  # the name again
                           chunk({}, "tool_calls")]}

    client, _ = fake_client(script)
    settings = LiveSettings(repeat=1, modes=("stream",))
    writer = RecordsWriter(tmp_path, [CALL_P], settings, "reasoning_content", model="m")
    records = live.run_all(client, [CALL_P], settings, "reasoning_content", model="m", on_record=writer.add)
    writer.finish(records, texts={}, summary={})
    (saved,), _, _ = live.load_records(tmp_path / "records.jsonl")
    assert saved == records[0]
    assert saved.stream_errors == ["delta 2, tool call index 0: later delta repeats the name 'get_weather'"]
    m = live.compute_metrics([saved], [CALL_P])
    thresholds = live.load_thresholds()
    gate = {name: res.meets(thresholds[name]) for name, res in m.items() if res.total}
    assert gate == {"query_success_rate": True, "finish_with_tool_calls_rate": True, "trigger_agreement_rate": True,
                    "tool_call_accuracy": True, "not_only_reasoning_rate": True, "expectation_match_rate": True,
                    "stream_protocol_error_rate": False}
    assert m["stream_protocol_error_rate"].offending_prompt_ids() == ["call-p"]


def test_stream_deadline():
    settings = LiveSettings(timeout_s=0.0)

    def script(kw):
        return {"chunks": [chunk({"content": "a"}), chunk({"content": "b"}, "stop")]}

    client, _ = fake_client(script)
    r = live.run_one(client, NO_P, settings, "think_in_content", model="m", mode="stream", repeat=0,
                     return_token_ids=False)
    assert not r.ok and "TimeoutError" in r.error


def test_detokenize_goes_to_the_server_root_through_the_harness_client():
    """vLLM's /detokenize sits at the server root (not under /v1); an HTTP error status is raised."""
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body))
            status, answer = (200, {"prompt": "hello"}) if body["tokens"] else (400, {"error": "no tokens"})
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        assert live.detokenize_via_server(url, "m", "key", [1, 2]) == "hello"
        assert seen == [("/detokenize", "Bearer key", {"model": "m", "tokens": [1, 2]})]
        with pytest.raises(OSError, match="HTTP 400"):
            live.detokenize_via_server(url, "m", None, [])
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ record mode


OUTPUT = ('The user wants Paris weather.\n</think>\n\n<minimax:tool_call>\n<invoke name="get_weather">\n'
          '<parameter name="location">Paris</parameter>\n<parameter name="days">2</parameter>\n'
          '</invoke>\n</minimax:tool_call>')


def _recorded(tmp_path, record, prompt, detokenize):
    paths = live.record_golden([record], [prompt], tmp_path, settings=LiveSettings(), server_parser="minimax_m2",
                               vllm_version="0.32.0", detokenize=detokenize)
    assert len(paths) == 1
    return paths[0], golden.load_case(paths[0])


def test_recorded_case_loads_as_golden(tmp_path):
    r = rec("call-p", [call(args='{"location": "Paris", "days": 2}')], reasoning="The user wants Paris weather.",
            mode="stream", repeat=2)
    r.token_ids, r.prompt_token_ids = [11, 12, 13, 200020], [1, 2]
    r.messages = live.build_messages(MT, "reasoning_content")
    path, case = _recorded(tmp_path, r, CALL_P, lambda ids: OUTPUT + "[e~[")
    assert case.id.startswith("live-call-p-stream-r2-") and path.name == case.id + ".yaml"
    assert case.description.startswith("RECORDED - needs review")
    assert case.output == OUTPUT and case.finish == "stop" and "recorded" in case.tags
    assert case.messages[1]["reasoning_content"] == "Call the tool."
    m2 = case.expected["minimax_m2"]
    assert m2["reasoning"] == "The user wants Paris weather." and m2["content"] is None
    assert m2["tool_calls"] == [{"name": "get_weather", "arguments": {"location": "Paris", "days": 2}}]
    assert m2["finish_reason"] == "tool_calls"
    at = case.expected["minimax_m2_append_think"]
    assert at["reasoning"] is None and at["content"].startswith("<think>The user wants") and at["content"].endswith("</think>")
    assert "disagreed" not in case.description
    tokens = json.loads((tmp_path / f"{case.id}.tokens.json").read_text())
    assert tokens["token_ids"] == [11, 12, 13, 200020] and tokens["prompt_token_ids"] == [1, 2]
    assert golden.load_corpus(tmp_path)[0].id == case.id  # sidecars are not cases


def test_recorded_case_notes_server_disagreement(tmp_path):
    r = rec("call-p", [call(args='{"location": "Paris", "days": "2"}')])
    r.token_ids = [1]
    _, case = _recorded(tmp_path, r, CALL_P, lambda ids: OUTPUT)
    assert "disagreed" in case.description
    assert case.expected["minimax_m2"]["tool_calls"][0]["arguments"]["days"] == 2  # the reference, not the server


def test_recorded_case_without_token_ids_is_reconstructed(tmp_path):
    r = rec("no-p", content="你好！我是 MiniMax。\n有什么可以帮你？", reasoning="用户打招呼。", finish="length")
    path, case = _recorded(tmp_path, r, NO_P, None)
    assert case.output == "用户打招呼。\n</think>\n\n你好！我是 MiniMax。\n有什么可以帮你？"
    assert "no token ids" in case.description and case.finish == "length"
    assert case.expected["minimax_m2"]["finish_reason"] == "length"
    assert case.expected["minimax_m2"]["content"] == "你好！我是 MiniMax。\n有什么可以帮你？"
    assert "你好" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped
    assert not (tmp_path / f"{case.id}.tokens.json").exists()


def test_recorded_append_think_answer_with_calls_and_failed_detokenize(tmp_path):
    r = rec("par-p", [call(), call(args='{"location": "Rome"}', id="c2")], reasoning=None,
            content="<think>\nTwo cities.\n</think>\n\n")
    r.token_ids = [5, 6]

    def boom(ids):
        raise ConnectionError("down")

    _, case = _recorded(tmp_path, r, PAR_P, boom)
    assert "detokenize failed: ConnectionError" in case.description
    assert case.output.startswith("\nTwo cities.\n</think>")
    assert [c["arguments"]["location"] for c in case.expected["minimax_m2"]["tool_calls"]] == ["Paris", "Rome"]


def test_failed_records_are_not_recorded(tmp_path):
    assert live.record_golden([rec(ok=False)], PROMPTS, tmp_path, settings=LiveSettings(), server_parser=None,
                              vllm_version="x", detokenize=None) == []


def test_long_code_output_round_trips_yaml(tmp_path):
    code = "\n".join(f"    line_{i} = {i}  # trailing space " for i in range(60)) + "\n\n"
    out = "Write it.\n</think>\n<minimax:tool_call>\n<invoke name=\"write_file\">\n<parameter name=\"path\">a.py" \
          f"</parameter>\n<parameter name=\"content\">{code}</parameter>\n</invoke>\n</minimax:tool_call>"
    r = rec("code-p", [call("write_file", json.dumps({"path": "a.py", "content": code.strip()}))])
    r.token_ids = [1]
    _, case = _recorded(tmp_path, r, CODE_P, lambda ids: out)
    assert case.output == out
    assert case.expected["minimax_m2"]["tool_calls"][0]["arguments"]["content"] == code.strip()


def test_yaml_dump_is_plain_safe_yaml(tmp_path):
    r = rec("no-p", content="a: b\n- c", reasoning="x")
    path, case = _recorded(tmp_path, r, NO_P, None)
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["id"] == case.id


def test_reasoning_kept_in_prompt():
    assert live.reasoning_kept_in_prompt(MT) == ["Call the tool."]
    ps = {p.id: p for p in live.load_prompts()}
    assert live.reasoning_kept_in_prompt(ps["mt-new-user-turn"]) == []  # all before the last user turn
    assert len(live.reasoning_kept_in_prompt(ps["zh-mt-two-rounds-answer"])) == 2
    assert live.reasoning_kept_in_prompt(ps["weather-paris"]) == []


class _Cfg:
    def __init__(self, **opts):
        self.opts = opts

    def getoption(self, name):
        return self.opts.get(name)


def test_live_config_choice():
    real, reduced = SimpleNamespace(model="real"), SimpleNamespace(model="reduced")
    configs = {"tp4": real, "dp8-ep": real, "gpu1": reduced}
    assert live.live_config_id(_Cfg(), configs) == "tp4"
    assert live.live_config_id(_Cfg(minimax_configs=["gpu1", "dp8-ep"]), configs) == "dp8-ep"
    assert live.live_config_id(_Cfg(**{"--live-config": "dp8-ep"}), configs) == "dp8-ep"
    with pytest.raises(pytest.skip.Exception, match="needs the real MiniMax-M2"):
        live.live_config_id(_Cfg(**{"--live-config": "gpu1"}), configs)
