"""The drafter (`./suite new-case`, fixtures/draft.py): one raw output in, a golden case out with the
reference's expectation marked for review, and vLLM's parsers run on it the way the parser tier runs
them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import draft, golden, known
from fixtures.env import vllm_version
from fixtures.reference import parse_output

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]

TOOLS = [{
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a text file.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "max_lines": {"type": "integer"}},
            "required": ["path"],
        },
    },
}]
# A raw MiniMax-M2 output as a user would paste it from a server log (the file ends with a newline
# that the model did not write: --strip-final-newline).
OUTPUT = (
    "The user wants the first lines of the config.\n</think>\n\n"
    "<minimax:tool_call>\n<invoke name=\"read_file\">\n<parameter name=\"path\">conf/app.yaml</parameter>\n"
    "<parameter name=\"max_lines\">40</parameter>\n</invoke>\n</minimax:tool_call>"
)


def _args(tmp_path: Path, *extra: str) -> list[str]:
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS), encoding="utf-8")
    (tmp_path / "output.txt").write_text(OUTPUT + "\n", encoding="utf-8")
    return ["--id", "read-config", "--description", "Reads a config file.", "--source", "vllm PR 35895",
            "--tags", "basic,drafted", "--tools", str(tmp_path / "tools.json"), "--user", "Show me the config.",
            "--output", str(tmp_path / "output.txt"), "--strip-final-newline", "--out-dir", str(tmp_path / "cases"),
            *extra]


def test_new_case_end_to_end(tmp_path, tokenizer):
    """Draft -> a valid case whose expectation is the reference's, marked for review -> vLLM's parsers
    run on it at once: every (reasoning parser, mode) cell reported, pass or the difference."""
    out = io.StringIO()
    assert draft.main(_args(tmp_path), stdout=out, tokenizer=tokenizer) == 0
    path = tmp_path / "cases" / "read-config.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.startswith(draft.REVIEW_MARK), "a drafted case is marked for review"
    case = golden.load_case(path)
    assert case.output == OUTPUT and case.tags == ("basic", "drafted") and case.source == "vllm PR 35895"
    assert case.messages == [{"role": "user", "content": "Show me the config."}]
    for parser in golden.REASONING_PARSERS:
        ref = parse_output(case.output, case.tools, parser, case.finish, case.tool_choice)
        assert not golden.diff_results(case.expected[parser], ref)
    assert case.expected["minimax_m2"]["tool_calls"] == [
        {"name": "read_file", "arguments": {"path": "conf/app.yaml", "max_lines": 40}}]

    report = out.getvalue()
    for parser in golden.REASONING_PARSERS:
        for mode in ("nonstream", "stream"):
            line = next((ln for ln in report.splitlines() if ln.split()[:2] == [parser, mode]), None)
            assert line is not None, f"no line for {parser} {mode}:\n{report}"
            assert " pass (" in line or " DEVIATES at " in line, line
    assert "parser:1" in report and "parser:whole" in report
    assert "of 4 cells pass" in report

    # A reviewer deletes the marker: the case is unchanged.
    path.write_text("".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith(draft.REVIEW_MARK)))
    reviewed = golden.load_case(path)
    assert reviewed.expected == case.expected and reviewed.output == case.output


def test_refuses_to_overwrite_and_bad_input(tmp_path, capsys):
    assert draft.main(_args(tmp_path, "--no-vllm"), stdout=io.StringIO()) == 0
    assert draft.main(_args(tmp_path, "--no-vllm"), stdout=io.StringIO()) == 2
    assert "exists" in capsys.readouterr().err
    assert draft.main(_args(tmp_path, "--no-vllm", "--force"), stdout=io.StringIO()) == 0
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    args = _args(tmp_path, "--no-vllm", "--force")
    args[args.index("--tools") + 1] = str(tmp_path / "bad.json")
    assert draft.main(args, stdout=io.StringIO()) == 2
    assert "tools" in capsys.readouterr().err


def test_stdin_truncation_and_named_choice(tmp_path):
    """The command line: output on stdin, finish length and a named tool_choice reach the case and its
    expectation (an unfinished invoke is dropped, rule T2; finish_reason length)."""
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS), encoding="utf-8")
    cut = OUTPUT[: OUTPUT.index("40")]
    proc = subprocess.run(
        [sys.executable, "-m", "fixtures.draft", "--id", "cut", "--description", "d", "--source", "REFERENCE 4",
         "--tools", str(tmp_path / "tools.json"), "--finish", "length", "--tool-choice", "read_file",
         "--out-dir", str(tmp_path), "--no-vllm"],
        input=cut, text=True, capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    case = golden.load_case(tmp_path / "cut.yaml")
    assert case.finish == "length" and case.tool_choice == {"type": "function", "function": {"name": "read_file"}}
    assert case.expected["minimax_m2"]["tool_calls"] == [] and case.expected["minimax_m2"]["finish_reason"] == "length"


def test_drafter_drives_vllm_like_the_parser_tier(tokenizer):
    """On a corpus case with recorded known behaviour, the drafter sees exactly what the parser tier
    recorded for this vLLM version (same labels deviate, same results)."""
    case = golden.load_case(golden.DEFAULT_CASES_DIR / "basic-weather-single-invoke.yaml")
    record = known.load_records(known.DEFAULT_KNOWN_DIR).get(case.subject)
    version = vllm_version()
    rows = draft.run_vllm(case, tokenizer)
    assert {(r["parser"], r["mode"]) for r in rows} == {(p, m) for p in golden.REASONING_PARSERS
                                                          for m in ("nonstream", "stream")}
    checked = 0
    for row in rows:
        cell = record.cell(row["parser"], row["mode"]) if record else None
        variants = [v for v in (cell.for_label(row["label"]) if cell else []) if version in v.seen_on]
        if not variants:
            if cell is None or not any(version in v.seen_on for v in cell.variants):
                continue  # nothing recorded for this vLLM version: nothing to compare
            assert row["ok"], f"{row['parser']} {row['mode']} {row['label']}: deviates but the record says it passes"
            continue
        assert not row["ok"], f"{row['parser']} {row['mode']} {row['label']}: passes but a deviation is recorded"
        assert any(v.signature["result"] == row["result"] for v in variants), row
        checked += 1
    if record and not checked:
        pytest.skip(f"the known record of {case.id} has no observation from vLLM {version}")
