"""Server tier: the prompt the server renders for tools, tool results, parallel calls and multi-turn
history with reasoning (interleaved thinking) equals the reviewed golden prompts (golden/prompts).

Known vLLM behaviour here is judged like every other cell (fixtures.known, subject `prompts/<name>`):
after the request, from the text the server rendered - a server that does not answer is never `known`."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.golden import GOLDEN_ROOT, load_prompt
from fixtures.known import Observation, error_signature

pytestmark = pytest.mark.server

PROMPTS = sorted((GOLDEN_ROOT / "prompts").glob("*.yaml"))


def _render(endpoint, spec) -> tuple[str, str]:
    """(rendered, golden) as the server's tokenizer sees them."""
    body = {"messages": spec["messages"], "add_generation_prompt": True}
    if spec.get("tools"):
        body["tools"] = spec["tools"]
    rendered = endpoint.post("/tokenize", body)["tokens"]
    golden = endpoint.post("/tokenize", {"prompt": spec["prompt"], "add_special_tokens": False})["tokens"]
    if rendered == golden:
        return spec["prompt"], spec["prompt"]
    return (endpoint.post("/detokenize", {"tokens": rendered})["prompt"],
            endpoint.post("/detokenize", {"tokens": golden})["prompt"])


@pytest.mark.parametrize("prompt_file", PROMPTS, ids=[p.stem for p in PROMPTS])
def test_rendered_prompt_matches_golden(prompt_file: Path, server_factory, server_config, reasoning_parser,
                                        request, golden_verdict):
    spec = load_prompt(prompt_file)
    endpoint = server_factory(server_config, reasoning_parser)
    request.node.user_properties.append(("config_id", server_config))
    try:
        got, want = _render(endpoint, spec)
    except Exception as exc:  # noqa: BLE001 - a failed request is an observation of its own
        text = f"{type(exc).__name__}: {exc}"
        obs = Observation("server", False, {"error": error_signature(text)}, [f"request failed: {text}"])
    else:
        problems = [] if got == want else [
            f"the server renders a different prompt ({spec['source']})\n--- golden\n{want}\n--- rendered\n{got}"]
        obs = Observation("server", not problems, {"result": {"prompt": got}}, problems)
    golden_verdict(f"prompts/{prompt_file.stem}", parser=reasoning_parser, mode="template", tier="server",
                   observations=[obs])
