"""The release verdict of a run (reports/gate.json) for CI: a Markdown table for the job summary, the verdict
word for a shell, and the job's exit status.

    python scripts/gate_summary.py reports/gate.json --summary "$GITHUB_STEP_SUMMARY" [--title T] [--attempts N]
    python scripts/gate_summary.py reports/gate.json --verdict     # prints pass | fail | inconclusive
    python scripts/gate_summary.py reports/gate.json --exit        # 0 pass, 1 fail (a regression), 2 inconclusive

An inconclusive run (the suite could not judge: too few benchmark samples, a request that timed out, an
interrupted run; docs/verdict.md) is never reported as a regression: its exit status is 2, its summary says
"inconclusive - not a regression" with the reasons. A missing or unreadable gate.json is inconclusive too
(the run died before writing a verdict).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT = {"pass": 0, "fail": 1, "inconclusive": 2}
HEAD = ["gate", "status", "passed", "failed", "errors", "skipped", "xfailed", "not run", "inconclusive",
        "known", "fixed", "changed", "new"]
KEYS = ["passed", "failed", "errors", "skipped", "xfailed", "not_run", "inconclusive", "known", "fixed", "changed", "new"]
ICON = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "skipped": "⏭️", "not-run": "➖"}


def load(path: Path) -> dict:
    try:
        gate = json.loads(path.read_text())
        if not isinstance(gate, dict) or gate.get("verdict") not in EXIT:
            raise ValueError("no verdict in it")
        return gate
    except (OSError, ValueError) as exc:
        return {"verdict": "inconclusive", "reason": f"no readable verdict at {path} ({exc}): the run ended "
                                                     "before writing one", "gates": {}, "missing": True}


def headline(gate: dict) -> str:
    v = gate["verdict"]
    word = {"pass": "PASS", "fail": "FAIL - a regression (or a new deviation) to look at",
            "inconclusive": "INCONCLUSIVE - no verdict on vLLM this run; not a regression"}[v]
    return f"{ICON.get(v, '')} **{word}**: {gate.get('reason', '')}"


def markdown(gate: dict, title: str | None = None, attempts: int = 1) -> str:
    out = [f"## {title or 'Release gate'}", "", headline(gate), ""]
    versions = gate.get("versions") or {}
    if versions:
        out.append(f"vLLM `{versions.get('vllm')}` (commit `{(versions.get('vllm_commit') or 'unknown')[:12]}`, "
                   f"{versions.get('vllm_distribution') or '?'}); run `{gate.get('run_id', '?')}`"
                   + (f"; attempt {attempts} (an inconclusive first attempt was run again)" if attempts > 1 else ""))
        out.append("")
    gates = gate.get("gates") or {}
    if gates:
        out.append("| " + " | ".join(HEAD) + " |")
        out.append("|" + "---|" * len(HEAD))
        for name, g in gates.items():
            status = g.get("status", "?")
            out.append(f"| {name} | {ICON.get(status, '')} {status} | " + " | ".join(str(g.get(k, 0)) for k in KEYS) + " |")
        out.append("")
    configs = gate.get("configurations") or {}
    if configs:
        out.append("| configuration | status | GPUs | reason |")
        out.append("|---|---|---|---|")
        for cid, c in sorted(configs.items()):
            out.append(f"| {cid} | {c.get('status')} | {c.get('gpus', '-')} | {c.get('reason') or ''} |")
        out.append("")
    bench = ((gate.get("metrics") or {}).get("bench")) or {}
    rows = [(cfg, m, v) for cfg, ms in sorted(bench.items()) for m, v in ms.items()]
    if rows:
        out.append("| configuration | metric | observed | floor | verdict | previous green |")
        out.append("|---|---|---|---|---|---|")
        for cfg, m, v in rows:
            out.append(f"| {cfg} | {m} | {v.get('value')} | {v.get('floor')} | {v.get('verdict')} | {v.get('previous')} |")
        out.append("")
    problems = []
    for name, g in gates.items():
        problems += [f"- {name}: failed `{f.get('nodeid') or f.get('message')}`" for f in (g.get("failures") or [])[:10]]
        problems += [f"- {name}: inconclusive `{i.get('nodeid')}`: {i.get('reason')}" for i in (g.get("inconclusives") or [])[:10]]
    if problems:
        out += ["<details><summary>failures and inconclusive tests</summary>", "", *problems, "", "</details>", ""]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gate", type=Path)
    ap.add_argument("--summary", type=Path, help="append the Markdown table to this file ($GITHUB_STEP_SUMMARY)")
    ap.add_argument("--title", default=None)
    ap.add_argument("--attempts", type=int, default=1)
    ap.add_argument("--verdict", action="store_true", help="print the verdict word only")
    ap.add_argument("--exit", action="store_true", help="exit 0 pass, 1 fail, 2 inconclusive")
    args = ap.parse_args(argv)
    gate = load(args.gate)
    if args.verdict:
        print(gate["verdict"])
        return 0
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as f:
            f.write(markdown(gate, args.title, args.attempts))
    for name, g in (gate.get("gates") or {}).items():
        print(f"{name:9} {g.get('status')}")
    print("verdict:", gate["verdict"], "-", gate.get("reason", ""))
    if args.exit:
        if gate["verdict"] == "inconclusive":
            print(f"::error title=inconclusive (not a regression)::{gate.get('reason', '')}")
        elif gate["verdict"] == "fail":
            print(f"::error title=release gate failed::{gate.get('reason', '')}")
        return EXIT[gate["verdict"]]
    return 0


if __name__ == "__main__":
    sys.exit(main())
