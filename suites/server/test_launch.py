"""Every selected launch configuration does what its data says: it serves (health, warm-up, the
served model listed), or it is refused at load with the documented error (pure TP8's FP8 block
check, reproduced on two GPUs by tp2-refused)."""

from __future__ import annotations

import re

import pytest

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
