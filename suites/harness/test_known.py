"""Known vLLM behaviour (fixtures.known, fixtures.known_update): the cell verdict, the update command, and
the whole loop on real vLLM parsers - a known cell whose behaviour changes fails as `changed`, a stale record
whose cell now meets the expectation is `fixed`, a deviation without a record is `new` until a finding is
named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures import known, known_update
from fixtures.golden import DEFAULT_CASES_DIR

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
CASE = "basic-weather-single-invoke"  # append_think deviates (think-end-swallowed); minimax_m2 passes
REGISTRY = {"think-end-swallowed": {"title": "t"}, "other": {"title": "o"}}


def _sig(content: str) -> dict:
    return {"result": {"reasoning": None, "content": content, "tool_calls": [], "finish_reason": "stop"},
            "problems": []}


def _cell(*variants: known.Variant) -> known.Cell:
    return known.Cell("minimax_m2_append_think", "stream", list(variants))


def _obs(label: str, content: str | None) -> known.Observation:
    return known.Observation(label, content is None, {} if content is None else _sig(content), ["p"])


# ---------------------------------------------------------------- judge


@pytest.mark.parametrize("observed, kind", [
    ({"parser:1": "A", "parser:2": "A"}, "known"),
    ({"parser:1": "B", "parser:2": "A"}, "changed"),
    ({"parser:1": None, "parser:2": None}, "fixed"),
    ({"parser:1": None, "parser:2": "A"}, "known"),       # partly fixed: still known, noted
    ({"parser:1": "A", "parser:3": "A"}, "new"),          # a label that used to pass now deviates
    ({"parser:3": None}, "pass"),
], ids=["known", "changed", "fixed", "partly-fixed", "new-label", "pass"])
def test_judge_per_label(observed, kind):
    cell = _cell(known.Variant(["parser:1", "parser:2"], ["think-end-swallowed"], _sig("A"), ["0.32.0"]))
    verdict = known.judge(cell, [_obs(lbl, c) for lbl, c in observed.items()], REGISTRY)
    assert verdict.kind == kind, verdict
    if kind in ("known", "fixed"):
        assert "think-end-swallowed" in verdict.message


def test_no_record_deviation_is_new_and_pass_is_pass():
    assert known.judge(None, [_obs("parser", "A")], REGISTRY).kind == "new"
    assert known.judge(None, [_obs("parser", None)], REGISTRY).kind == "pass"


def test_unassigned_or_unregistered_finding_is_still_new():
    for findings in ([known.UNASSIGNED], ["not-in-registry"], []):
        cell = _cell(known.Variant(["server"], findings, _sig("A"), ["0.32.0"]))
        assert known.judge(cell, [_obs("server", "A")], REGISTRY).kind == "new", findings


def test_a_cell_that_varies_on_one_version_is_unstable_not_changed():
    cell = _cell(known.Variant(["server"], ["other"], _sig("A"), ["0.33.0"]),
                 known.Variant(["server"], ["other"], _sig("B"), ["0.33.0"]))
    assert cell.unstable_labels() == ["server"]
    assert known.judge(cell, [_obs("server", "B")], REGISTRY).kind == "known"
    assert known.judge(cell, [_obs("server", "C")], REGISTRY).kind == "unstable"
    # the same two results on two different versions: a change between versions, not instability
    cell.variants[1].seen_on = ["0.34.0"]
    assert known.judge(cell, [_obs("server", "C")], REGISTRY).kind == "changed"


def _merged(server: str | None, token_by_token: str | None) -> known.Observation:
    """A server stream that came in merged deltas, reproduced by the parser on its chunking; its stand-in."""
    obs = _obs("server", server)
    obs.problems = ["[server] streamed in merged deltas (...), which vLLM's own parser reproduces here"]
    obs.token_by_token = _obs("server", token_by_token)
    obs.token_by_token.problems = ["[server] streamed in merged deltas (...)"]
    return obs


@pytest.mark.parametrize("server, token_by_token, kind", [
    ("C", "A", "known"),      # merged deltas gave another result; token by token the recorded one
    ("C", None, "changed"),   # only the merged chunking deviates: judged as it is, never turned into a pass
    ("B", None, "known"),     # ... as it is: what the parser tier recorded at a merged chunking (parser:3)
    (None, "A", "known"),     # merged deltas happened to meet the expectation: not `fixed`
    ("C", "D", "changed"),    # token by token the parser changed too
], ids=["merged-differs", "merged-only-deviates", "merged-as-recorded-chunking", "merged-meets", "parser-changed"])
def test_a_merged_server_stream_is_judged_by_the_parser_token_by_token(server, token_by_token, kind):
    """A server stream in merged deltas (a loaded API server) that vLLM's own parser reproduces on the same
    chunking is judged by what that parser gives token by token, as the records were made."""
    cell = _cell(known.Variant(["parser:1", "server"], ["think-end-swallowed"], _sig("A"), ["0.32.0"]),
                 known.Variant(["parser:3"], ["think-end-swallowed"], _sig("B"), ["0.32.0"]))
    verdict = known.judge(cell, [_merged(server, token_by_token)], REGISTRY)
    assert verdict.kind == kind, verdict
    if kind == "known":
        assert "merged deltas" in verdict.message


def test_no_stand_in_where_the_records_say_the_server_is_not_the_parser():
    """Without a stand-in a server stream is judged as it is, also when it equals a result the parser tier
    recorded at another chunking; where the records show the server streaming a cell unlike the parser
    token by token (a named tool_choice, decided outside the parsers), a stand-in is not used either."""
    cell = _cell(known.Variant(["parser:1", "server"], ["think-end-swallowed"], _sig("A"), ["0.32.0"]),
                 known.Variant(["parser:3"], ["think-end-swallowed"], _sig("B"), ["0.32.0"]))
    assert known.judge(cell, [_obs("server", "B")], REGISTRY).kind == "changed"
    own = _cell(known.Variant(["server"], ["think-end-swallowed"], _sig("S"), ["0.32.0"]))
    assert not known.server_as_parser(own) and known.server_as_parser(None)
    assert known.judge(own, [_merged("S", "A")], REGISTRY).kind == "known"
    assert known.judge(own, [_merged("C", "S")], REGISTRY).kind == "changed"


def test_update_known_lets_a_stand_in_confirm_a_record_and_nothing_else():
    def run(cell, obs):
        records = {"cases/c": known.Record("cases/c", [cell] if cell else [])}
        item = {"subject": "cases/c", "parser": "minimax_m2_append_think", "mode": "stream", "tier": "server",
                "verdict": "?", "observations": [json.loads(json.dumps(obs.to_json()))]}
        return records, known_update.update(records, [item], "0.33.0")

    def cell():
        return _cell(known.Variant(["parser:1", "server"], ["think-end-swallowed"], _sig("A"), ["0.32.0"]))

    unreproduced = [_obs("server", content) for content in (None, "C")]  # merged, the parser gave another
    for obs in unreproduced:
        obs.merged = [1, 2]
    c = cell()
    _, s = run(c, _merged("C", "A"))
    assert s.confirmed == 1 and c.variants[0].seen_on == ["0.32.0", "0.33.0"] and len(c.variants) == 1
    for obs in (_merged("C", "D"), _merged(None, None), _merged("C", None), *unreproduced):
        c = cell()
        _, s = run(c, obs)
        assert s.merged_left and not s.confirmed and not s.fixed and not s.added, obs
        assert [(v.where, v.signature, v.seen_on) for v in c.variants] == \
            [(["parser:1", "server"], _sig("A"), ["0.32.0"])], obs
    records, s = run(None, _merged("C", "A"))  # no record: a merged stream never starts one
    assert s.merged_left and not records["cases/c"].cells


def test_update_known_judges_a_merged_stream_against_the_records_the_run_was_judged_against():
    """The parser tier's parser:1 re-recorded (--accept) earlier in the same update does not change how the
    server's merged stream was judged (against the records as they were): it still only confirms."""
    cell = _cell(known.Variant(["parser:1", "server"], ["think-end-swallowed"], _sig("A"), ["0.32.0"]))
    records = {"cases/c": known.Record("cases/c", [cell])}
    items = [{"subject": "cases/c", "parser": cell.parser, "mode": "stream", "tier": tier, "verdict": "?",
              "observations": [obs.to_json()]} for tier, obs in (("parser", _obs("parser:1", "Z")),
                                                                  ("server", _merged("C", "A")))]
    s = known_update.update(records, items, "0.33.0", accept=True)
    assert s.accepted and s.confirmed == 1 and not s.merged_left, s
    server = cell.for_label("server")
    assert [(v.signature, v.seen_on) for v in server] == [(_sig("A"), ["0.32.0", "0.33.0"])]


def test_observation_json_round_trip_keeps_the_stand_in():
    obs = _merged("C", "A")
    again = known.Observation.from_json(json.loads(json.dumps(obs.to_json())))
    assert (again.label, again.ok, again.signature) == (obs.label, obs.ok, obs.signature)
    assert again.token_by_token.signature == obs.token_by_token.signature
    assert again.token_by_token.token_by_token is None
    obs.merged = [1, 3, 2]
    assert known.Observation.from_json(json.loads(json.dumps(obs.to_json()))).merged == [1, 3, 2]


def test_error_signature_keeps_class_and_status_only():
    text = "InternalServerError: Error code: 500 - {'error': {'message': 'req-1234 grammar rejected'}}"
    assert known.error_signature(text) == "InternalServerError HTTP 500"
    assert known.error_signature("ServerError: /tokenize: HTTP 501: Unsupported method") == "ServerError HTTP 501"
    assert known.normalize_problem("delta 17, tool call index 0: later delta repeats the name 'x'") == \
        "tool call index 0: later delta repeats the name 'x'"


# ---------------------------------------------------------------- update


def _item(label: str, content: str | None, parser="minimax_m2_append_think", mode="stream"):
    return {"subject": "cases/c", "parser": parser, "mode": mode, "tier": "parser", "verdict": "?",
            "observations": [{"label": label, "ok": content is None,
                              "signature": None if content is None else _sig(content)}]}


def test_update_records_new_as_unassigned_confirms_known_and_removes_fixed(tmp_path):
    records: dict = {}
    s = known_update.update(records, [_item("parser:1", "A"), _item("server", "A")], "0.32.0")
    cell = records["cases/c"].cell("minimax_m2_append_think", "stream")
    assert len(s.added) == 1 and s.confirmed == 0  # the server saw the same: shares the new variant
    assert cell.variants[0].where == ["parser:1", "server"] and cell.variants[0].findings == [known.UNASSIGNED]
    cell.variants[0].findings = ["think-end-swallowed"]
    s = known_update.update(records, [_item("parser:1", "A")], "0.33.0")
    assert s.confirmed == 1 and s.findings_seen == {"think-end-swallowed"}
    assert cell.variants[0].seen_on == ["0.32.0", "0.33.0"]
    s = known_update.update(records, [_item("parser:1", "B")], "0.34.0")
    assert s.changed_left and cell.variants[0].signature == _sig("A"), "changed is not recorded without --accept"
    s = known_update.update(records, [_item("parser:1", "B")], "0.34.0", accept=True)
    assert s.accepted and {tuple(v.where) for v in cell.variants} == {("server",), ("parser:1",)}
    assert all(v.findings == ["think-end-swallowed"] for v in cell.variants), "accepted keeps the findings"
    known_update.update(records, [_item("parser:1", None), _item("server", None)], "0.35.0")
    assert records["cases/c"].cells == []
    known_update.write_records(records | {"cases/d": known.Record("cases/d", [cell])}, tmp_path)
    assert not (tmp_path / "cases/c.yaml").exists()


def test_records_round_trip_and_bad_files_name_file_and_field(tmp_path):
    cell = _cell(known.Variant(["parser:2", "parser:10", "parser", "server"], ["other"], _sig("A"), ["0.32.0"]))
    known_update.write_records({"cases/x": known.Record("cases/x", [cell])}, tmp_path)
    back = known.load_records(tmp_path)["cases/x"].cells[0]
    assert back.variants[0].where == ["parser", "parser:2", "parser:10", "server"]
    assert back.variants[0].signature == _sig("A")
    bad = tmp_path / "cases/x.yaml"
    bad.write_text(bad.read_text().replace("where:", "wher:"))
    with pytest.raises(known.KnownFormatError, match=r"x\.yaml: field cells\.0\.observed\.0"):
        known.load_records(tmp_path)
    with pytest.raises(known.KnownFormatError, match="does not exist"):
        known.load_registry(tmp_path / "none.yaml")


def test_project_records_name_registered_findings():
    registry = known.load_registry()
    records = known.load_records()
    assert not known.check_findings(records, registry)
    assert records, "the project records what vLLM does differently"
    used = {f for r in records.values() for c in r.cells for f in c.findings()}
    assert known.UNASSIGNED not in used


def test_add_seen_on_edits_only_those_lines(tmp_path):
    reg = tmp_path / "findings.yaml"
    shutil.copy(known.DEFAULT_REGISTRY, reg)
    before = reg.read_text()
    assert known_update.add_seen_on(reg, {"param-whitespace-kept"}, "0.40.0") == ["param-whitespace-kept"]
    after = reg.read_text()
    assert known.load_registry(reg)["param-whitespace-kept"]["seen_on"][-1] == "0.40.0"
    assert len([a for a, b in zip(before.splitlines(), after.splitlines()) if a != b]) == 1


# ---------------------------------------------------------------- the loop on real vLLM parsers


def _pytest(tmp_path: Path, *args: str) -> tuple[int, dict]:
    report = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites/parser/test_golden_parser.py",
         f"--report-dir={report}", "-q", "-k", "append_think", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    gate = json.loads((report / "gate.json").read_text()) if (report / "gate.json").is_file() else {}
    gate["_out"] = proc.stdout + proc.stderr
    return proc.returncode, gate


def _verdicts(gate: dict) -> dict[str, str]:
    return {cell.split("|")[2]: v for cell, v in gate.get("cells", {}).items()}


def _corpus(tmp_path: Path, **replace: str) -> Path:
    corpus = tmp_path / "cases"
    corpus.mkdir(parents=True, exist_ok=True)
    text = (DEFAULT_CASES_DIR / f"{CASE}.yaml").read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    (corpus / f"{CASE}.yaml").write_text(text)
    return corpus


def test_known_changed_fixed_on_real_parsers(tmp_path):
    corpus = _corpus(tmp_path)
    rc, gate = _pytest(tmp_path, f"--golden-dir={corpus}")
    assert rc == 0 and set(_verdicts(gate).values()) == {"known"}, gate["_out"][-3000:]
    # The same case whose output (and expectation) now reads differently: vLLM's wrong answer is not the
    # recorded one any more -> changed, a failure, even though the finding is the same.
    changed = _corpus(tmp_path / "c", **{"in celsius. I should": "in Celsius. I should"})
    rc, gate = _pytest(tmp_path / "c", f"--golden-dir={changed}")
    assert rc == 1 and set(_verdicts(gate).values()) == {"changed"}, gate["_out"][-3000:]
    assert "differs from the known record" in gate["_out"]
    # A record claiming the minimax_m2 cells deviate, while vLLM meets the expectation there -> fixed.
    stale = tmp_path / "known"
    records = known.load_records()
    cell = records[f"cases/{CASE}"].cells[0]
    stale_cell = known.Cell("minimax_m2", cell.mode, cell.variants)
    known_update.write_records({f"cases/{CASE}": known.Record(f"cases/{CASE}", [stale_cell])}, stale)
    rc, gate = _pytest(tmp_path / "f", f"--golden-dir={corpus}", f"--known-dir={stale}", "-k", "not append_think")
    assert rc == 0 and _verdicts(gate)[cell.mode] == "fixed", gate["_out"][-3000:]
    rc, gate = _pytest(tmp_path / "s", f"--golden-dir={corpus}", f"--known-dir={stale}", "--strict-known",
                       "-k", "not append_think")
    assert rc == 1, gate["_out"][-3000:]


def test_update_known_loop(tmp_path):
    """nightly goes red (new) -> update-known records it as unassigned (still red) -> a person names the
    finding -> green."""
    corpus, empty = _corpus(tmp_path), tmp_path / "known"
    rc, gate = _pytest(tmp_path, f"--golden-dir={corpus}", f"--known-dir={empty}")
    assert rc == 1 and set(_verdicts(gate).values()) == {"new"}, gate["_out"][-3000:]
    reg = tmp_path / "findings.yaml"
    shutil.copy(known.DEFAULT_REGISTRY, reg)
    proc = subprocess.run([sys.executable, "-m", "fixtures.known_update", str(tmp_path / "r"), f"--known-dir={empty}",
                           f"--findings={reg}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "new (recorded as unassigned" in proc.stdout, proc.stdout + proc.stderr
    rc, gate = _pytest(tmp_path, f"--golden-dir={corpus}", f"--known-dir={empty}")
    assert rc == 1 and set(_verdicts(gate).values()) == {"new"}, "unassigned keeps failing"
    path = empty / "cases" / f"{CASE}.yaml"
    data = yaml.safe_load(path.read_text())
    assert {v["where"][0] for c in data["cells"] for v in c["observed"]} == {"parser", "parser:1"}
    path.write_text(path.read_text().replace(known.UNASSIGNED, "think-end-swallowed"))
    rc, gate = _pytest(tmp_path, f"--golden-dir={corpus}", f"--known-dir={empty}")
    assert rc == 0 and set(_verdicts(gate).values()) == {"known"}, gate["_out"][-3000:]
