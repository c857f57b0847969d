"""The golden case format: malformed files give one clear error naming the file and the field, and
`--golden-dir` runs a corpus from outside the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.golden import DEFAULT_CASES_DIR, GoldenFormatError, load_case, load_corpus

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
GOOD = DEFAULT_CASES_DIR / "basic-weather-single-invoke.yaml"


def _variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = GOOD.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new, 1).replace("id: basic-weather-single-invoke", f"id: {name}", 1))
    return path


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("source: ", "sauce: ", "(top level)"),
        ("finish_reason: tool_calls", "finish_reason: done", "expected.minimax_m2.finish_reason"),
        ("tool_choice: auto", "tool_choice: sometimes", "request.tool_choice"),
        ("  minimax_m2_append_think:", "  minimax_m2_appendthink:", "expected"),
        ("\noutput: ", "\noutput: 42\nx_output: ", "(top level)"),
    ],
    ids=["unknown-key", "bad-finish-reason", "bad-tool-choice", "parser-typo", "extra-key"],
)
def test_malformed_case_names_file_and_field(tmp_path, old, new, field):
    path = _variant(tmp_path, "broken", old, new)
    with pytest.raises(GoldenFormatError) as err:
        load_case(path)
    message = str(err.value)
    assert str(path) in message and f"field {field}" in message, message


def test_id_must_match_file_name(tmp_path):
    path = tmp_path / "other-name.yaml"
    shutil.copy(GOOD, path)
    with pytest.raises(GoldenFormatError, match=r"other-name\.yaml: field id"):
        load_case(path)


def test_version_pinned_deviations_are_refused(tmp_path):
    """The old format pinned known behaviour to vLLM versions inside the case: refused with a pointer."""
    path = _variant(tmp_path, "old-format", "expected:", "deviations:\n- {vllm: ==0.32.0, reason: x}\nexpected:")
    with pytest.raises(GoldenFormatError, match=r"old-format\.yaml: field deviations: .*golden/known"):
        load_case(path)


def test_duplicate_key_is_an_error(tmp_path):
    path = _variant(tmp_path, "dup", "expected:", "tags: []\nexpected:")
    with pytest.raises(GoldenFormatError, match="duplicate key 'tags'"):
        load_case(path)


def test_empty_or_missing_directory(tmp_path):
    with pytest.raises(GoldenFormatError, match="no \\*.yaml"):
        load_corpus(tmp_path)
    with pytest.raises(GoldenFormatError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")


def _pytest(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


def test_malformed_corpus_stops_the_run_with_one_error(tmp_path):
    _variant(tmp_path, "broken", "finish_reason: tool_calls", "finish_reason: done")
    proc = _pytest("suites/parser/test_golden_parser.py", f"--golden-dir={tmp_path}", f"--report-dir={tmp_path / 'r'}", "-q")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out[-2000:]
    errors = [line for line in out.splitlines() if "golden corpus:" in line]
    assert len(errors) == 1 and "broken.yaml: field expected.minimax_m2.finish_reason" in errors[0], out[-2000:]


def test_golden_dir_outside_the_repo_runs(tmp_path):
    corpus = tmp_path / "my-corpus"
    corpus.mkdir()
    shutil.copy(GOOD, corpus / GOOD.name)
    proc = _pytest(
        "suites/parser/test_golden_parser.py", f"--golden-dir={corpus}", f"--report-dir={tmp_path / 'r'}", "-q",
        "-k", "minimax_m2 and not append_think",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "2 passed" in out, out[-2000:]
