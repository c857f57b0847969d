"""Every selected launch configuration does what its data says: it serves (health, warm-up, the
served model listed, and a vLLM answering: /version and a one-token chat completion), or it is
refused at load with the documented error (pure TP8's FP8 block check, reproduced on two GPUs by
tp2-refused).

Against `--server-url` the same test checks that what answers there is a vLLM serving the model: an
endpoint that only lists the model (a static /v1/models file) fails with the reason. There is no skip
for endpoints that are not a vLLM: the claim of this test is that vLLM serves MiniMax-M2; to run the
other tiers against some other OpenAI-compatible deployment, deselect it (`-k "not launches"`)."""

from __future__ import annotations

import re

import pytest

from fixtures.endpoint import ServerError, check_vllm_answers

pytestmark = pytest.mark.server


def test_configuration_launches_as_documented(server_config, launch_configs, server_factory, refused_launch, request):
    request.node.user_properties.append(("config_id", server_config))
    cfg = launch_configs[server_config]
    if cfg.expect == "refused":
        line = refused_launch(server_config)
        assert re.search(cfg.error, line), f"{server_config}: refused, but not with the documented error: {line}"
        return
    endpoint = server_factory(server_config)
    served = [m.id for m in endpoint.client().models.list().data]
    assert endpoint.model in served, f"{endpoint.model!r} not among the served models {served}"
    try:
        version = check_vllm_answers(endpoint)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    request.node.user_properties.append(("served_vllm_version", version))
