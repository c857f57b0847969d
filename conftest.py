"""Root of the suite: the golden corpus, the tokenizer, and the harness plugins.

Tests never know how a server is started or where a case came from: they ask for fixtures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from fixtures import golden, known, report
from fixtures.plugin import CORPUS_KEY, KNOWN_KEY, golden_corpus, known_behaviour
from fixtures.env import vllm_version

ROOT = Path(__file__).resolve().parent

# The suite's plugins and options: fixtures/plugin.py, registered by `-p fixtures.plugin` in pyproject.toml's
# addopts (so that pytest knows every option before it loads this file); listed here too for runs without it.
pytest_plugins = ["fixtures.plugin"]

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

def pytest_configure(config: pytest.Config) -> None:
    directory = config.getoption("--golden-dir") or golden.DEFAULT_CASES_DIR
    try:
        config.stash[CORPUS_KEY] = golden.load_corpus(Path(directory))
    except golden.GoldenFormatError as exc:
        raise pytest.UsageError(f"golden corpus: {exc}") from None
    try:
        registry = known.load_registry(Path(config.getoption("--findings") or known.DEFAULT_REGISTRY))
        records = known.load_records(Path(config.getoption("--known-dir") or known.DEFAULT_KNOWN_DIR))
    except golden.GoldenFormatError as exc:
        raise pytest.UsageError(f"known behaviour: {exc}") from None
    config.stash[KNOWN_KEY] = (registry, records)
    report.record_registry(registry)
    tok = config.getoption("--tokenizer")
    if tok and not (Path(tok) / "tokenizer_config.json").is_file():
        raise pytest.UsageError(f"--tokenizer {tok}: no tokenizer_config.json in that folder")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "golden_case" in metafunc.fixturenames:
        cases = golden_corpus(metafunc.config)
        metafunc.parametrize("golden_case", cases, ids=[c.id for c in cases])
    if "reasoning_parser" in metafunc.fixturenames:
        metafunc.parametrize("reasoning_parser", golden.REASONING_PARSERS)


@pytest.fixture(scope="session")
def vllm_version_str() -> str:
    return vllm_version()


@pytest.fixture(scope="session")
def tokenizer_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tokenizer folder every tier uses: --tokenizer, or the MiniMax-like one built in code."""
    given = request.config.getoption("--tokenizer")
    if given:
        return Path(given)
    from fixtures.tokenizer import write_tokenizer

    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path):
    from fixtures.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


@pytest.fixture
def golden_verdict(request: pytest.FixtureRequest, vllm_version_str: str):
    """Judge a cell once its observations are known (fixtures.known.judge): pass and fixed pass (fixed
    fails under --strict-known), known and unstable are xfail naming the finding, changed and new fail.
    Every observation goes to reports/observations.json for `./suite update-known`."""

    def verdict(subject: str, *, parser: str, mode: str, tier: str,
                observations: list[known.Observation]) -> known.Verdict:
        registry, records = known_behaviour(request.config)
        rec = records.get(subject)
        result = known.judge(rec.cell(parser, mode) if rec else None, observations, registry)
        case_id = subject.split("/", 1)[1]
        request.node.user_properties.extend([
            ("vllm_version", vllm_version_str), ("case_id", case_id), ("parser", parser), ("mode", mode),
            ("known_verdict", result.kind), ("findings", result.findings),
            ("cell", f"{subject}|{parser}|{mode}|{tier}"),
        ] + ([("known_message", result.message)] if result.message else []))
        report.record_observation({
            "subject": subject, "parser": parser, "mode": mode, "tier": tier, "verdict": result.kind,
            "observations": [o.to_json() for o in observations],
        })
        if result.kind in ("known", "unstable"):
            pytest.xfail(result.message)
        if result.kind in known.FAILING or (result.kind == "fixed" and request.config.getoption("--strict-known")):
            pytest.fail(f"{case_id}: {result.message}", pytrace=False)
        return result

    return verdict
