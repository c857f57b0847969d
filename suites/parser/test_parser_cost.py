"""Parser cost gate: per-token cost of vLLM's minimax_m2 streaming parser as outputs grow.

Coding agents write whole files through a tool call: one `write_file` invoke whose `content` parameter
is thousands of tokens long. The serving layer hands the parser one delta per engine step (one token
with stream_interval=1). A parser that does constant work per delta costs the same per token at 1k and
16k tokens; one that re-scans or re-serializes the accumulated arguments per delta costs O(length) per
token (quadratic in total). The gate: per-token cost at the longest size / at the shortest must stay
below `parser_cost.max_growth` in fixtures/data/floors.yaml. Beyond it, the growth class (quadratic:
per-token cost grows about as the length; worse than quadratic: well beyond) is judged like any other
known vLLM behaviour (fixtures.known, subject `checks/parser-cost`, finding stream-parser-quadratic-cost).

What is timed is the parser alone (`parse_delta`, as vLLM's chat serving calls it, through
fixtures.vllm_parsers.ParserDriver with the seed's parser flags), over a window of single-token deltas
at the END of each output: that is the per-token cost at that output length. The output before the
window is streamed too (in chunks of `PREFIX_CHUNK` tokens, i.e. stream_interval=64, to keep the 16k case
to seconds; the parser's state is checked by the final arguments). `--parser-cost-full` streams every
token one by one instead (minutes at 16k on a quadratic parser) and times all of them.

pytest-benchmark times each whole stream (pedantic, 1 round); the parser-only per-token costs go to the
benchmark's extra_info and the test's user_properties.
"""

from __future__ import annotations

import time

import pytest
from fixtures import bench_floors
from fixtures.known import Observation
from fixtures.vllm_parsers import ParserDriver, chunked

pytestmark = [pytest.mark.parser]

REASONING_PARSER = "minimax_m2_append_think"  # the seed's flags (REFERENCE section 1)
WINDOW = 256  # single-token deltas timed at the end of each output
PREFIX_CHUNK = 64
PATH = "/work/app/generated.py"

TOOLS = [{
    "type": "function",
    "function": {
        "name": "write_file",
        "description": "Write a file to disk, replacing it.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
}]
MESSAGES = [{"role": "user", "content": "Write the module to /work/app/generated.py."}]



def _cost() -> dict:
    """floors.yaml's parser_cost section, from this run's floors file (--bench-floors)."""
    return bench_floors.load_floors()["parser_cost"]


def _sizes() -> list[int]:
    return [int(s) for s in _cost()["sizes"]]


def _line(i: int) -> str:
    return f"    result_{i} = compute(values[{i}], factor={i % 7}, name=\"item-{i}\")  # step {i}\n"


def _output(content_lines: int) -> tuple[str, str]:
    content = "def main(values):\n" + "".join(_line(i) for i in range(content_lines)) + "    return 0\n"
    text = (
        "The user wants the module written. I will write the file in one call.\n</think>\n\n"
        "<minimax:tool_call>\n<invoke name=\"write_file\">\n"
        f"<parameter name=\"path\">{PATH}</parameter>\n"
        f"<parameter name=\"content\">{content}</parameter>\n"
        "</invoke>\n</minimax:tool_call>"
    )
    return text, content


def output_of_about(tokenizer, n_tokens: int) -> tuple[list[int], str]:
    """Token ids of a write_file call of about n_tokens tokens (+-1 line), and the content it writes."""
    per = len(tokenizer.encode(_line(12345), add_special_tokens=False))
    base = len(tokenizer.encode(_output(0)[0], add_special_tokens=False))
    lines = max(1, (n_tokens - base) // per)
    for _ in range(8):
        ids = tokenizer.encode(_output(lines)[0], add_special_tokens=False)
        off = n_tokens - len(ids)
        if abs(off) <= per:
            break
        lines = max(1, lines + off // per)
    return ids, _output(lines)[1]


class TimedDriver(ParserDriver):
    """ParserDriver whose parser records the duration and delta size of every parse_delta call."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.calls: list[tuple[int, float]] = []

    def _parser(self, request):
        parser = super()._parser(request)
        inner = parser.parse_delta

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            self.calls.append((len(kwargs.get("delta_token_ids") or ()), time.perf_counter() - t0))
            return out

        parser.parse_delta = timed
        return parser


def measure(tokenizer, size: int, *, full: bool) -> dict:
    ids, content = output_of_about(tokenizer, size)
    if full:
        chunks = chunked(ids, 1)
        timed_from = 0
    else:
        cut = max(0, len(ids) - WINDOW)
        chunks = (chunked(ids[:cut], PREFIX_CHUNK) if cut else []) + chunked(ids[cut:], 1)
        timed_from = len(chunks) - (len(ids) - cut)
    driver = TimedDriver(tokenizer, REASONING_PARSER, TOOLS, "auto", MESSAGES, None)
    t0 = time.perf_counter()
    run = driver.stream(chunks)
    wall = time.perf_counter() - t0
    # The parser must still produce the right call, or its cost means nothing.
    assert not run.problems, run.problems
    calls = run.result["tool_calls"]
    assert len(calls) == 1 and calls[0]["name"] == "write_file", calls
    assert calls[0]["arguments"] == {"path": PATH, "content": content}, "streamed write_file arguments differ"
    timed = driver.calls[timed_from:]
    assert timed and all(n == 1 for n, _ in timed)
    parser_s = sum(t for _, t in timed)
    return {
        "size": size, "tokens": len(ids), "timed_tokens": len(timed), "mode": "full" if full else f"window{WINDOW}",
        "per_token_us": parser_s / len(timed) * 1e6, "parser_s_timed": parser_s,
        "parser_s_all": sum(t for _, t in driver.calls), "stream_wall_s": wall,
    }


_MEASURED: dict[tuple[int, bool], dict] = {}


@pytest.fixture(scope="module")
def warm_parser(tokenizer):
    """One short stream first: imports and first-call setup are not per-token cost."""
    measure(tokenizer, 300, full=True)
    return tokenizer


@pytest.fixture(scope="module")
def full_mode(request) -> bool:
    return bool(request.config.getoption("--parser-cost-full"))


def _label(size: int) -> str:
    return f"{size // 1024}k" if size % 1024 == 0 else str(size)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ == "test_parser_per_token_cost":  # sizes of --bench-floors, read at collection
        sizes = _sizes()
        metafunc.parametrize("size", sizes, ids=[_label(s) for s in sizes])


def test_parser_per_token_cost(benchmark, warm_parser, full_mode, size, vllm_version_str, record_property):
    out = benchmark.pedantic(measure, args=(warm_parser, size), kwargs={"full": full_mode},
                             rounds=1, iterations=1, warmup_rounds=0)
    _MEASURED[(size, full_mode)] = out
    benchmark.extra_info.update(out | {"vllm_version": vllm_version_str, "reasoning_parser": REASONING_PARSER})
    for k in ("tokens", "mode", "per_token_us", "parser_s_timed", "stream_wall_s"):
        record_property(f"parser_cost_{k}", out[k])
    record_property("vllm_version", vllm_version_str)


def growth_class(ratio: float, limit: float, size_ratio: float) -> str:
    """linear below the limit; quadratic while the per-token growth stays below size_ratio**1.5 (the
    geometric middle between the size ratio, quadratic, and its square, cubic); worse beyond."""
    if ratio < limit:
        return "linear"
    return "quadratic" if ratio < size_ratio ** 1.5 else "worse than quadratic"


def test_parser_cost_growth(request, warm_parser, full_mode, vllm_version_str, record_property, golden_verdict):
    sizes = _sizes()
    lo, hi = min(sizes), max(sizes)
    costs = {}
    for s in sizes:
        if (s, full_mode) not in _MEASURED:  # run alone, under -k or xdist: measure here
            _MEASURED[(s, full_mode)] = measure(warm_parser, s, full=full_mode)
        costs[s] = _MEASURED[(s, full_mode)]["per_token_us"]
    ratio = costs[hi] / costs[lo]
    limit = float(_cost()["max_growth"])
    summary = ", ".join(f"{_label(s)}: {c:.1f} us/token" for s, c in costs.items())
    record_property("parser_cost_per_token_us", {_label(s): round(c, 2) for s, c in costs.items()})
    record_property("parser_cost_growth", round(ratio, 2))
    record_property("parser_cost_max_growth", limit)
    record_property("vllm_version", vllm_version_str)
    growth = growth_class(ratio, limit, hi / lo)
    problems = [] if growth == "linear" else [
        f"minimax_m2 streaming parser per-token cost grows {ratio:.1f}x from {_label(lo)} to {_label(hi)} tokens "
        f"({growth}; limit {limit}x, floors.yaml parser_cost): {summary}"]
    obs = Observation("parser", not problems, {"result": {"growth": growth}}, problems)
    golden_verdict("checks/parser-cost", parser=REASONING_PARSER, mode="stream", tier="parser", observations=[obs])
