"""The replay client's two measured fixes for a 2-core machine (no server needed): every thread of the replay
pool runs before the first request, and an endpoint hands out one shared openai client without keep-alive."""

from __future__ import annotations

import threading
import time

import pytest

from fixtures.endpoint import Endpoint
from fixtures.replay_client import ReplayTimeout, Speed, _started_pool, replay_all, twice_timed_out

pytestmark = pytest.mark.harness


def test_all_pool_threads_run_before_the_first_job():
    seen = []
    with _started_pool(12) as pool:
        def job(_):
            seen.append(sum(1 for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")))
            time.sleep(0.01)
        list(pool.map(job, range(30)))
    assert seen and min(seen) == 12, seen  # a lazily started pool shows 1 thread at its first job


def test_one_openai_client_per_endpoint_without_keepalive():
    ep = Endpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key="k", config_id="c",
                  reasoning_parser=None, log_path=None)
    a, b = ep.client(timeout=5), ep.client(timeout=7)
    assert (a.timeout, b.timeout) == (5, 7)
    assert a._client is b._client, "each call built its own HTTP client (an SSL context per request)"
    assert a._client._transport._pool._max_keepalive_connections == 0
    other = Endpoint(base_url="http://127.0.0.1:10/v1", model="m", api_key="k", config_id="c",
                     reasoning_parser=None, log_path=None)
    assert other.client()._client is not a._client


def test_a_request_that_timed_out_twice_on_a_healthy_server_is_a_failure():
    """Twice timed out is inconclusive only when the server was slow: a second probe at half its measured
    speed or better, after a retry that had its whole speed-derived deadline, means vLLM did not finish
    that case (a hang or a crawl of its own) - a failure, never hidden as noise."""
    speed = Speed(single_tps=20.0, aggregate_tps=80.0)
    first = {"seconds": 300.0, "deadline_s": 300.0}
    out = {"seconds": 90.0, "deadline_s": 90.0}
    label, text = twice_timed_out(first, out, speed, 19.0, "19.0 tok/s", cut=False)
    assert label == "stuck" and "not slow, it did not finish this case" in text and "20.0 tok/s alone" in text
    assert twice_timed_out(first, out, speed, 6.0, "6.0 tok/s", cut=False)[0] == "inconclusive", "slow now"
    assert twice_timed_out(first, out, speed, None, "APITimeoutError: x", cut=False)[0] == "inconclusive"
    label, text = twice_timed_out(first, out, speed, 19.0, "19.0 tok/s", cut=True)
    assert label == "inconclusive" and "deadline was cut" in text, "a shortened deadline proves nothing"


def test_a_test_timeout_too_short_for_any_request_is_said_at_once():
    """A pytest timeout that leaves less than one request's floor: nothing is sent, one clear ReplayTimeout
    (the server tier reports it inconclusive for every case of that server)."""
    with pytest.raises(ReplayTimeout, match="leaves 10 s for the replay"):
        replay_all(None, [], budget_s=10.0)

