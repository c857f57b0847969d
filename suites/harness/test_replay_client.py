"""The replay client's two measured fixes for a 2-core machine (no server needed): every thread of the replay
pool runs before the first request, and an endpoint hands out one shared openai client without keep-alive."""

from __future__ import annotations

import threading
import time

import pytest

from fixtures.endpoint import Endpoint
from fixtures.replay_client import _started_pool

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
