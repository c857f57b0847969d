"""The launch configurations kept as data (fixtures/data/configs.yaml) are valid and keep the seed's flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from fixtures import configs as launch_configs
from fixtures import server_process
from fixtures.golden import REASONING_PARSERS

pytestmark = pytest.mark.harness

# REFERENCE section 1: the seed's flags beyond `vllm serve MiniMaxAI/MiniMax-M2`, verbatim.
PARSER_FLAGS = ("--tool-call-parser minimax_m2 --reasoning-parser minimax_m2_append_think "
                "--enable-auto-tool-choice")
SEED_FLAGS = {
    "tp4": f"--tensor-parallel-size 4 {PARSER_FLAGS}",
    "dp8-ep": f"--data-parallel-size 8 --enable-expert-parallel {PARSER_FLAGS}",
    "tp4-piecewise": f"--tensor-parallel-size 4 {PARSER_FLAGS} "
                     "--compilation-config '{\"cudagraph_mode\": \"PIECEWISE\"}'",
    "tp8": f"--tensor-parallel-size 8 {PARSER_FLAGS}",
}
SEED_GPUS = {"tp4": 4, "dp8-ep": 8, "tp4-piecewise": 4, "tp8": 8}
REQUIRED_IDS = {"tp4", "dp8-ep", "tp4-piecewise", "tp8", "tp4-m2-reasoning", "tp4-ep", "tp2",
                "tp2-refused", "gpu1", "cpu"}


def _as_set_of_options(argv: list[str]) -> dict[str, tuple[str, ...]]:
    """{flag: values}: order of options does not matter to vllm serve, their values do."""
    out: dict[str, tuple[str, ...]] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("--"), f"stray value {flag!r}"
        vals = []
        i += 1
        while i < len(argv) and not argv[i].startswith("--"):
            vals.append(argv[i])
            i += 1
        assert flag not in out, f"{flag} given twice"
        out[flag] = tuple(vals)
    return out


@pytest.fixture(scope="module")
def configs():
    return launch_configs.load_configs()


def test_configs_file_validates(configs):
    assert REQUIRED_IDS <= set(configs), f"missing: {REQUIRED_IDS - set(configs)}"


@pytest.mark.parametrize("config_id", sorted(SEED_FLAGS))
def test_seed_configuration_has_exactly_the_seed_flags(configs, config_id):
    cfg = configs[config_id]
    assert cfg.source == "seed"
    assert cfg.model == "real"
    assert cfg.gpus == SEED_GPUS[config_id]
    assert cfg.default_reasoning_parser == "minimax_m2_append_think"
    got = cfg.flags()  # the documented flags: args + the seed's default reasoning parser
    want = shlex.split(SEED_FLAGS[config_id])
    assert _as_set_of_options(got) == _as_set_of_options(want)
    assert sorted(got) == sorted(want)


def test_seed_expectations(configs):
    for cid in ("tp4", "dp8-ep", "tp4-piecewise"):
        assert configs[cid].expect == "serves"
    tp8 = configs["tp8"]
    assert tp8.expect == "refused"
    msg = "ValueError: The output_size of gate's and up's weight = 192 is not divisible by weight quantization block_n = 128."
    assert re.search(tp8.error, msg)


def test_every_configuration_is_complete(configs):
    for cfg in configs.values():
        assert cfg.description and cfg.model in launch_configs.MODEL_KINDS
        assert set(cfg.reasoning_parsers) <= set(REASONING_PARSERS)
        opts = _as_set_of_options(list(cfg.args))
        assert opts.get("--tool-call-parser") == ("minimax_m2",), cfg.id
        assert "--enable-auto-tool-choice" in opts, cfg.id
        assert cfg.expect in launch_configs.EXPECTATIONS
        assert (cfg.error is not None) == (cfg.expect == "refused"), cfg.id
        if cfg.model in ("full", "reduced", "tiny", "tiny-bad-width"):
            assert opts.get("--load-format") == ("dummy",), f"{cfg.id}: a model built in code has no weights"


def test_recipe_variants(configs):
    assert configs["tp4-m2-reasoning"].flags()[-2:] == ["--reasoning-parser", "minimax_m2"]
    assert "--enable-expert-parallel" in configs["tp4-ep"].args
    tp2 = _as_set_of_options(list(configs["tp2"].args))
    tp4 = _as_set_of_options(list(configs["tp4"].args))
    assert tp2.pop("--tensor-parallel-size") == ("2",)
    tp4.pop("--tensor-parallel-size")
    assert tp4.items() <= tp2.items(), "tp2 keeps every tp4 flag"


def test_refused_configurations_reproduce_the_tp8_failure(configs):
    from fixtures.model import FP8_BLOCK, reduced_config

    bad = configs["tp2-refused"]
    assert bad.expect == "refused" and bad.gpus == 2 and bad.model == "tiny-bad-width"
    tp = int(_as_set_of_options(list(bad.args))["--tensor-parallel-size"][0])
    width = 384  # fixtures.model.write_bad_width_model's expert width
    assert (width // tp) % FP8_BLOCK != 0
    assert f"= {width // tp} is not divisible" in bad.error
    # the real model under tp8: 1536 / 8 = 192
    real_width = reduced_config()["intermediate_size"]
    assert f"= {real_width // 8} is not divisible" in configs["tp8"].error


def test_cpu_configuration(configs):
    cpu = configs["cpu"]
    assert cpu.gpus == 0 and cpu.model == "tiny" and cpu.expect == "serves"
    opts = _as_set_of_options(list(cpu.args))
    assert "--enforce-eager" in opts
    assert set(cpu.reasoning_parsers) == set(REASONING_PARSERS)


def test_default_configuration_follows_gpus():
    assert launch_configs.default_config_id(0) == "cpu"
    assert launch_configs.default_config_id(1) == "gpu1"


def test_harness_owned_flags_rejected(tmp_path: Path):
    data = yaml.safe_load(launch_configs.CONFIGS_PATH.read_text())
    data["configs"][0]["args"] = [*data["configs"][0]["args"], "--reasoning-parser", "minimax_m2"]
    bad = tmp_path / "configs.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(launch_configs.ConfigError, match="--reasoning-parser is set by the harness"):
        launch_configs.load_configs(bad)


@pytest.mark.parametrize("mutation, message", [
    (lambda c: c.pop("expect"), "expect"),
    (lambda c: c.update(model="huge"), "huge"),
    (lambda c: c.update(gpus=-1), "-1"),
    (lambda c: c.update(expect="refused"), "needs an error regex"),
])
def test_invalid_configurations_rejected(tmp_path: Path, mutation, message):
    data = yaml.safe_load(launch_configs.CONFIGS_PATH.read_text())
    mutation(data["configs"][0])
    bad = tmp_path / "configs.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(launch_configs.ConfigError, match=message):
        launch_configs.load_configs(bad)


def test_duplicate_id_rejected(tmp_path: Path):
    data = yaml.safe_load(launch_configs.CONFIGS_PATH.read_text())
    data["configs"].append(dict(data["configs"][0]))
    bad = tmp_path / "configs.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(launch_configs.ConfigError, match="duplicate"):
        launch_configs.load_configs(bad)


def test_command_line_of_a_launch(configs, tmp_path: Path):
    cmd = server_process.build_command(configs["tp4"], "MiniMaxAI/MiniMax-M2", "minimax_m2", 8000, "m")
    assert cmd[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", "MiniMaxAI/MiniMax-M2"]
    opts = _as_set_of_options(cmd[5:])
    assert opts["--reasoning-parser"] == ("minimax_m2",)
    assert opts["--logits-processors"] == (launch_configs.REPLAY_PROCESSOR,)
    assert "--api-key" not in opts
    env = server_process.build_env(configs["tp4"], "sk-secret", None)
    assert env["VLLM_API_KEY"] == "sk-secret"
    assert "sk-secret" not in " ".join(cmd)
