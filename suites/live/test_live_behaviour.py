"""Live tier: the real MiniMax-M2 behind vLLM, checked like MiniMax's Provider Verifier.

One session-level collection run (fixture `live_run`, fixtures/live/plugin.py) sends every prompt of
fixtures/data/live_prompts.yaml --repeat times, streamed and not streamed, at the sampling MiniMax
recommends (temperature 1.0, top_p 0.95, top_k 40; --live-temperature/--live-top-p/--live-top-k),
--live-concurrency requests at a time. Each test below asserts one metric against
fixtures/data/live_thresholds.yaml for one mode; a failure lists the offending prompt ids.

Without a GPU and without --server-url every test here skips (exit 0).
"""

from __future__ import annotations

import pytest

from fixtures.live import METRICS, MODES, LiveRun, metric_modes

# The session run can take long on real hardware; every request has its own --live-timeout.
pytestmark = [pytest.mark.gpu, pytest.mark.timeout(0)]


def _check(run: LiveRun, thresholds: dict, metric: str, mode: str, request) -> None:
    result = run.metrics_for(mode)[metric]
    threshold = thresholds[metric]
    props = request.node.user_properties  # (record_property warns under junit xunit2)
    props.append((f"live.{mode}.{metric}", result.rate))
    props.append((f"live.{mode}.{metric}.counts", f"{result.count}/{result.total}"))
    if result.offenses:
        props.append((f"live.{mode}.{metric}.offending", ",".join(result.offending_prompt_ids())))
    assert result.meets(threshold), f"[{mode}] " + result.failure_message(threshold)


# Each metric in each mode it applies to (stream_protocol_error_rate: stream only); a null threshold in
# the thresholds file would make its cell report only.
CELLS = [(mode, metric) for mode in MODES for metric in METRICS if mode in metric_modes(metric)]


@pytest.mark.parametrize("mode, metric", CELLS, ids=[f"{mode}-{metric}" for mode, metric in CELLS])
def test_live_metric(live_run, live_thresholds, mode, metric, request):
    _check(live_run, live_thresholds, metric, mode, request)


def test_every_request_was_sent(live_run):
    """The run covered prompt x repeat x mode exactly once each."""
    s = live_run.settings
    keys = [(r.prompt_id, r.mode, r.repeat) for r in live_run.records]
    assert len(keys) == len(set(keys)) == len(live_run.prompts) * s.repeat * len(s.modes)


def test_recorded_cases_load(live_run):
    """--record-golden: every file written loads as a golden case."""
    if live_run.settings.record_dir is None:
        pytest.skip("--record-golden not given")
    from fixtures.golden import load_case

    for path in live_run.recorded:
        load_case(path)


def test_interleaved_thinking_reaches_prompt(live_run):
    """Multi-turn prompts: the reasoning sent back (reasoning_content, or <think> in content) is in
    the prompt the server rendered (prompt_token_ids, decoded by the server's /detokenize)."""
    from fixtures.live import reasoning_kept_in_prompt

    checked, missing = 0, []
    for prompt in live_run.prompts:
        wanted = reasoning_kept_in_prompt(prompt)
        if not wanted:
            continue
        for mode in MODES:
            rec = next((r for r in live_run.records if r.prompt_id == prompt.id and r.mode == mode
                        and r.ok and r.prompt_token_ids), None)
            if rec is None:
                continue
            text = live_run.detokenize(rec.prompt_token_ids)
            checked += 1
            lost = [w[:60] for w in wanted if w not in text]
            if lost:
                missing.append(f"{prompt.id} [{mode}] (history style {live_run.history_style}): {lost}")
    if checked == 0:
        pytest.skip("the server returned no prompt_token_ids (return_token_ids unsupported)")
    assert not missing, "earlier reasoning missing from the rendered prompt:\n" + "\n".join(missing)
