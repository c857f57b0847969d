"""Root of the suite: shared options, the golden corpus, the tokenizer, and the harness plugins.

Tests never know how a server is started or where a case came from: they ask for fixtures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from fixtures import golden
from fixtures.env import vllm_version

ROOT = Path(__file__).resolve().parent

pytest_plugins = ["fixtures.server", "fixtures.bench", "fixtures.report", "fixtures.live"]

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_CORPUS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("minimax", "MiniMax-M2 conformance suite")
    group.addoption(
        "--golden-dir", metavar="DIR", default=None,
        help="run the golden cases below DIR (format: golden/README.md) instead of golden/cases",
    )
    group.addoption(
        "--tokenizer", metavar="PATH", default=None,
        help="a real MiniMax-M2 tokenizer folder instead of the one built in code",
    )


def pytest_configure(config: pytest.Config) -> None:
    directory = config.getoption("--golden-dir") or golden.DEFAULT_CASES_DIR
    try:
        config.stash[_CORPUS] = golden.load_corpus(Path(directory))
    except golden.GoldenFormatError as exc:
        raise pytest.UsageError(f"golden corpus: {exc}") from None
    tok = config.getoption("--tokenizer")
    if tok and not (Path(tok) / "tokenizer_config.json").is_file():
        raise pytest.UsageError(f"--tokenizer {tok}: no tokenizer_config.json in that folder")


def golden_corpus(config: pytest.Config) -> list[golden.GoldenCase]:
    return config.stash[_CORPUS]


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
    """Judge a golden test once its problems are known (rules: fixtures.golden.judge)."""

    def judge(case: golden.GoldenCase, *, parser: str, mode: str, tier: str, problems: list[str]) -> None:
        request.node.user_properties.extend(
            [("vllm_version", vllm_version_str), ("case_id", case.id), ("parser", parser), ("mode", mode)]
        )
        outcome, message = golden.judge(case, vllm_version=vllm_version_str, parser=parser, mode=mode, tier=tier,
                                        problems=problems)
        if outcome == "xfail":
            pytest.xfail(message)
        if outcome == "fail":
            pytest.fail(message, pytrace=False)

    return judge
