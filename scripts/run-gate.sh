#!/usr/bin/env bash
# One gate run for CI: pytest with the given arguments, and once more when the verdict is inconclusive (a
# run that could not judge vLLM: noise, a timed-out request, too few samples). The first attempt's reports
# are kept in $REPORTS-attempt1. Never turns an inconclusive run into a failure of its own: the exit status
# is pytest's; scripts/gate_summary.py --exit decides the job (0 pass, 1 fail, 2 inconclusive).
#   PYTHON=.venv/bin/python REPORTS=reports bash scripts/run-gate.sh -m gpu --config tp4 ...
# Writes attempts=N to $GITHUB_OUTPUT when set.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
REPORTS=${REPORTS:-reports}
attempt() {
  "$PYTHON" -m pytest -c pyproject.toml "$@" --report-dir="$REPORTS"
}
attempt "$@"
rc=$?
attempts=1
verdict=$("$PYTHON" scripts/gate_summary.py "$REPORTS/gate.json" --verdict)
if [ "$verdict" = inconclusive ]; then
  echo "run-gate: the run was inconclusive - running it once more (first attempt kept in $REPORTS-attempt1)"
  rm -rf "$REPORTS-attempt1"
  cp -r "$REPORTS" "$REPORTS-attempt1"
  attempt "$@"
  rc=$?
  attempts=2
fi
[ -n "${GITHUB_OUTPUT:-}" ] && echo "attempts=$attempts" >> "$GITHUB_OUTPUT"
echo "run-gate: $attempts attempt(s), verdict $("$PYTHON" scripts/gate_summary.py "$REPORTS/gate.json" --verdict), pytest exit $rc"
exit $rc
