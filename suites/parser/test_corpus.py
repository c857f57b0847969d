"""The golden corpus checked against itself and against the reference oracle (no vLLM needed).

(a) every case's expectation equals fixtures.reference.parse_output for both reasoning parsers;
(b) every expected call names an offered tool and fits its JSON schema, unless tagged otherwise;
(c) the reference value conversion, rule by rule;
(d) the corpus covers the required variety (REFERENCE section 6 and the format variants).
"""

from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import pytest

from fixtures import golden
from fixtures.reference import convert_value, parse_output, render_tool_calls

pytestmark = pytest.mark.parser

# Tags that at least one case must carry: each item of REFERENCE section 6 that a parser can show,
# and the format variants of the MiniMax-M2 tool-call syntax.
REQUIRED_TAGS = {
    # REFERENCE section 6
    "regression-35895",  # 6.1 chunks larger than one token
    "regression-30554",  # 6.2 end-of-stream index error
    "regression-39649",  # 6.3 long string arguments streamed late
    "string-number",  # 6.4 string-typed values that look like numbers
    "regression-38212",  # 6.5 explicit <think> leaking
    "regression-35349",  # 6.6 </think> in the prompt history
    "regression-42307",  # 6.7 markup must survive detokenization
    "regression-ascend-10989",  # 6.8 tool call without </think>
    "regression-m21-10",  # 6.9 tool call inside the think block
    "partial-tag", "same-param-names", "empty-invoke",  # 6.10
    "regression-m2-14",  # 6.11 M1 format output
    # format variants
    "basic", "multi-invoke", "multi-block", "content-before", "content-after", "plain", "no-tools",
    "reasoning-only", "empty-reasoning", "explicit-think", "repeated-think-end", "tool-call-in-think",
    "multi-turn", "long-args", "code-value", "xml-value", "nested-json", "cjk", "emoji",
    "quoted-names", "unquoted-names", "whitespace", "unknown-tool", "truncated", "missing-block-end",
    "invalid-args", "tool-choice-none", "tool-choice-required", "tool-choice-named",
    "types", "type-string", "type-integer", "type-number", "type-boolean", "type-null",
    "type-object", "type-array", "type-enum", "type-anyof",
}

NO_SCHEMA_CHECK_TAGS = {"invalid-args", "truncated"}


@pytest.fixture(scope="module")
def corpus(request: pytest.FixtureRequest) -> list[golden.GoldenCase]:
    directory = request.config.getoption("--golden-dir") or golden.DEFAULT_CASES_DIR
    return golden.load_corpus(directory)


# ------------------------------------------------------------------ (a) expectation == oracle


def test_expected_matches_reference(golden_case: golden.GoldenCase, reasoning_parser: str) -> None:
    oracle = parse_output(
        golden_case.output, golden_case.tools, reasoning_parser, golden_case.finish, golden_case.tool_choice
    )
    diff = golden.diff_results(golden_case.expected[reasoning_parser], oracle)
    assert not diff, f"{golden_case.path}: expected.{reasoning_parser} disagrees with the reference:\n" + "\n".join(diff)


def test_append_think_content_starts_with_think(golden_case: golden.GoldenCase) -> None:
    exp = golden_case.expected["minimax_m2_append_think"]
    assert exp["reasoning"] is None
    assert (exp["content"] or "").startswith("<think>")


def test_parsers_agree_on_tool_calls(golden_case: golden.GoldenCase) -> None:
    a, b = (golden.normalize_result(golden_case.expected[p]) for p in golden.REASONING_PARSERS)
    assert a["tool_calls"] == b["tool_calls"] and a["finish_reason"] == b["finish_reason"]


def test_finish_reason_rule(golden_case: golden.GoldenCase) -> None:
    for parser in golden.REASONING_PARSERS:
        exp = golden_case.expected[parser]
        if golden_case.finish == "length":
            assert exp["finish_reason"] == "length"
        else:
            named = isinstance(golden_case.tool_choice, dict)
            assert exp["finish_reason"] == ("tool_calls" if exp["tool_calls"] and not named else "stop")


# ------------------------------------------------------------------ (b) calls fit the request


def test_expected_calls_fit_request(golden_case: golden.GoldenCase) -> None:
    tags = set(golden_case.tags)
    for call in golden_case.expected["minimax_m2"]["tool_calls"]:
        schema = golden_case.tool_schema(call["name"])
        if schema is None:
            assert "unknown-tool" in tags, f"{call['name']!r} is not offered and the case is not tagged unknown-tool"
            continue
        if tags & NO_SCHEMA_CHECK_TAGS:
            continue
        jsonschema.Draft202012Validator.check_schema(schema)
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(call["arguments"])]
        assert not errors, f"{call['name']} arguments break the tool schema: {errors}"


def test_unknown_tool_tag_is_used_only_for_unknown_tools(golden_case: golden.GoldenCase) -> None:
    if "unknown-tool" in golden_case.tags:
        names = [c["name"] for c in golden_case.expected["minimax_m2"]["tool_calls"]]
        assert any(golden_case.tool_schema(n) is None for n in names)


def test_case_ids_and_sources(golden_case: golden.GoldenCase) -> None:
    assert golden_case.source == "format variant" or any(
        word in golden_case.source for word in ("vllm", "MiniMax", "REFERENCE")
    ), golden_case.source


# ------------------------------------------------------------------ (c) value conversion

INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
STR = {"type": "string"}
OBJ = {"type": "object"}
ARR = {"type": "array"}

CONVERSIONS = [
    # V2 whitespace, V4 strings
    ("  hello \n", STR, "hello"),
    ("\nline 1\nline 2\n", STR, "line 1\nline 2"),
    ("3", STR, "3"),
    ("007", STR, "007"),
    ("true", STR, "true"),
    ('{"a": 1}', STR, '{"a": 1}'),
    ("none", STR, "none"),
    ("", STR, ""),
    ("3", {"type": "string", "enum": ["1", "3"]}, "3"),
    ("42", None, "42"),  # no schema: default string
    ("42", {"description": "untyped"}, "42"),
    ("42", {"type": "str"}, "42"),
    # V3 null before any type
    ("null", STR, None),
    ("NULL", INT, None),
    (" Null\n", OBJ, None),
    ("null", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, None),
    # V5 integer
    ("42", INT, 42),
    ("-7", INT, -7),
    ("\n 10 \n", INT, 10),
    ("3.0", INT, "3.0"),
    ("ten", INT, "ten"),
    ("", INT, ""),
    ("5", {"type": "int"}, 5),
    ("2", {"type": "integer", "enum": [1, 2]}, 2),
    # V6 number
    ("5.0", NUM, 5),
    ("2.5", NUM, 2.5),
    ("7", NUM, 7),
    ("1e3", NUM, 1000),
    ("-0.25", NUM, -0.25),
    ("abc", NUM, "abc"),
    ("inf", NUM, "inf"),
    ("nan", NUM, "nan"),
    ("1.5", {"type": "float"}, 1.5),
    # V7 boolean
    ("true", BOOL, True),
    ("True", BOOL, True),
    ("TRUE", BOOL, True),
    ("1", BOOL, True),
    ("false", BOOL, False),
    ("0", BOOL, False),
    ("yes", BOOL, False),
    ("", BOOL, False),
    ("true", {"type": "bool"}, True),
    # V8 object / array
    ('{"a": [1, 2.5, null, true]}', OBJ, {"a": [1, 2.5, None, True]}),
    ("{owner: bob}", OBJ, "{owner: bob}"),
    ("[1, 2]", ARR, [1, 2]),
    ('["x", {"y": "z"}]', ARR, ["x", {"y": "z"}]),
    ("1, 2, 3", ARR, "1, 2, 3"),
    ('"quoted"', OBJ, "quoted"),  # valid JSON of the wrong kind is still taken as JSON
    # V9 unknown type name: JSON or raw
    ("12", {"type": "any"}, 12),
    ("[1]", {"type": "custom"}, [1]),
    ("plain words", {"type": "custom"}, "plain words"),
    # V1 anyOf / oneOf / type lists: first non-null member
    ("5", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, 5),
    ("2.50", {"anyOf": [{"type": "null"}, {"type": "number"}]}, 2.5),
    ("True", {"oneOf": [{"type": "boolean"}, {"type": "string"}]}, True),
    ("7", {"oneOf": [{"type": "string"}, {"type": "integer"}]}, "7"),
    ("30", {"type": ["integer", "null"]}, 30),
    ("1.5", {"type": ["null", "number"]}, 1.5),
    ("x", {"anyOf": [{"type": "null"}]}, "x"),
]


@pytest.mark.parametrize(
    ("raw", "schema", "expected"), CONVERSIONS, ids=[f"{i}-{c[0]!r}" for i, c in enumerate(CONVERSIONS)]
)
def test_convert_value(raw: str, schema: dict | None, expected: object) -> None:
    got = convert_value(raw, schema)
    assert golden.canonical_json(got) == golden.canonical_json(expected), (raw, schema, got)


def test_convert_value_whole_float_is_int() -> None:
    got = convert_value("5.0", NUM)
    assert isinstance(got, int) and not isinstance(got, bool) and got == 5
    got = convert_value("2.5", NUM)
    assert isinstance(got, float) and math.isclose(got, 2.5)


def test_render_round_trip() -> None:
    schemas = {
        "f": {
            "type": "object",
            "properties": {"s": STR, "i": INT, "n": NUM, "b": BOOL, "o": OBJ, "a": ARR, "x": {"type": "custom"}},
        }
    }
    args = {"s": "3 < 4\nmulti", "i": -3, "n": 2.5, "b": False, "o": {"k": [1, None]}, "a": ["x"], "x": "text"}
    text = render_tool_calls([("f", args), ("g", {})], schemas)
    tools = [{"type": "function", "function": {"name": "f", "parameters": schemas["f"]}}]
    got = parse_output("r</think>" + text, tools, "minimax_m2")["tool_calls"]
    assert got == [{"name": "f", "arguments": args}, {"name": "g", "arguments": {}}]


# ------------------------------------------------------------------ (d) coverage


def _default_corpus_only(request: pytest.FixtureRequest) -> None:
    given = request.config.getoption("--golden-dir")
    if given and Path(given).resolve() != golden.DEFAULT_CASES_DIR.resolve():
        pytest.skip("coverage is required of the suite's own corpus (golden/cases), not of --golden-dir")


def test_corpus_covers_required_tags(corpus: list[golden.GoldenCase], request: pytest.FixtureRequest) -> None:
    _default_corpus_only(request)
    present = {tag for case in corpus for tag in case.tags}
    missing = sorted(REQUIRED_TAGS - present)
    assert not missing, f"no golden case carries the tags {missing}"


def test_corpus_size(corpus: list[golden.GoldenCase], request: pytest.FixtureRequest) -> None:
    _default_corpus_only(request)
    assert len(corpus) >= 64
