"""Parser tier: every golden case through the installed vLLM's MiniMax-M2 parsers, non-stream and
stream (token by token and in the multi-token batches that `stream_interval` produces)."""

from __future__ import annotations

import pytest

from fixtures.golden import GoldenCase, check_answer, normalize_result
from fixtures.known import Observation
from fixtures.report import record_golden_diff
from fixtures.tokenizer import check_minimax_tokens
from fixtures.vllm_parsers import ParserDriver, chunked

pytestmark = pytest.mark.parser

CHUNK_SIZES = (1, 2, 3, 5, 8, 10_000)


_PROMPTS: dict[tuple[int, str], list[int]] = {}


def _prompt_ids(tokenizer, case: GoldenCase) -> list[int]:
    key = (id(tokenizer), str(case.path))
    if key in _PROMPTS:
        return _PROMPTS[key]
    rendered = tokenizer.apply_chat_template(
        case.messages, tools=case.tools or None, add_generation_prompt=True, tokenize=True
    )
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    _PROMPTS[key] = list(rendered)
    return _PROMPTS[key]


def _driver(tokenizer, case: GoldenCase, reasoning_parser: str) -> ParserDriver:
    eos = tokenizer.convert_tokens_to_ids("[e~[")
    return ParserDriver(
        tokenizer=tokenizer,
        reasoning_parser=reasoning_parser,
        tools=case.tools,
        tool_choice=case.tool_choice,
        messages=case.messages,
        prompt_token_ids=_prompt_ids(tokenizer, case),
        eos_token_id=eos,
    )


def _observe(request, case, reasoning_parser, observed, label, *, protocol=(), extra=()) -> Observation:
    """One label's observation: `protocol` problems are part of what vLLM did (its signature); `extra`
    ones follow from other observations (stream vs non-stream) and only decide whether it passes."""

    def record(expected, got):  # one diff per test in the report: the first result that differs
        if not getattr(request.node, "_golden_diff_recorded", False):
            request.node._golden_diff_recorded = True
            record_golden_diff(request, case.id, reasoning_parser, label, expected, got)

    problems, signature = check_answer(case, reasoning_parser, observed, protocol=protocol, record=record)
    problems += list(extra)
    return Observation(label, not problems, signature, [f"[{label}] {p}" for p in problems])


def test_nonstream(golden_case, reasoning_parser, tokenizer, golden_verdict, request):
    ids = tokenizer.encode(golden_case.output, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=False) == golden_case.output, "tokenizer round trip"
    driver = _driver(tokenizer, golden_case, reasoning_parser)
    observed = driver.parse(golden_case.output, ids, engine_finish=golden_case.finish)
    obs = _observe(request, golden_case, reasoning_parser, observed, "parser")
    golden_verdict(golden_case.subject, parser=reasoning_parser, mode="nonstream", tier="parser", observations=[obs])


def test_stream(golden_case, reasoning_parser, tokenizer, golden_verdict, request):
    ids = tokenizer.encode(golden_case.output, add_special_tokens=False)
    driver = _driver(tokenizer, golden_case, reasoning_parser)
    nonstream = normalize_result(driver.parse(golden_case.output, ids, engine_finish=golden_case.finish))
    observations = []
    for size in CHUNK_SIZES:
        run = driver.stream(chunked(ids, size), engine_finish=golden_case.finish)
        label = "parser:whole" if size >= len(ids) else f"parser:{size}"
        extra = []
        if normalize_result(run.result) != nonstream:
            extra.append(f"stream result differs from non-stream: {normalize_result(run.result)} != {nonstream}")
        observations.append(_observe(request, golden_case, reasoning_parser, run.result, label,
                                     protocol=run.problems, extra=extra))
        if size >= len(ids):
            break
    golden_verdict(golden_case.subject, parser=reasoning_parser, mode="stream", tier="parser", observations=observations)


def test_tokenizer_has_the_minimax_tokens(tokenizer):
    """The built tokenizer (or --tokenizer) has the MiniMax control and tag tokens at their real ids,
    and the tags stay visible in decoded text (REFERENCE section 4): streams split where the model's do."""
    assert not check_minimax_tokens(tokenizer)
