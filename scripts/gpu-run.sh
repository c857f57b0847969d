#!/usr/bin/env bash
# Runs the suite on a GPU machine that has no network (this workplace's device machines), with the
# vLLM carry kit: bash scripts/gpu-run.sh [pytest args...]
#   KIT=.devkit (holds vllm-kit/part1 + install.sh and wheels-test/*.whl; see ../shared/device/README.md)
#   OUT=<folder>  where reports/ is copied at the end (the device tool's $OUT)
# On a GPU runner with network, install vLLM normally instead (scripts/setup.sh with VLLM_SPEC) and run
# ./suite run -m gpu.
set -uo pipefail
started=$(date +%s)
if [ -n "${PYTEST_DEADLINE:-}" ] && ! [[ $PYTEST_DEADLINE =~ ^[1-9][0-9]*$ ]]; then
  echo "gpu-run: PYTEST_DEADLINE must be whole seconds, not '$PYTEST_DEADLINE'" >&2; exit 2
fi
cd "$(dirname "$0")/.."
KIT=${KIT:-.devkit}
SITE=${SITE:-/tmp/site}
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f "$SITE/.ok" ]; then
  t0=$(date +%s)
  (cd "$KIT/vllm-kit" && SITE="$SITE" bash install.sh) || { echo "gpu-run: kit install failed" >&2; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$KIT"/wheels-test/*.whl || exit 3
  touch "$SITE/.ok"
  echo "gpu-run: kit installed in $(( $(date +%s) - t0 )) s"
fi
export VLLM_USE_FLASHINFER_SAMPLER=0          # FlashInfer is not in the kit
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
# PYTEST_DEADLINE=<seconds>, counted from this script's start (a fresh machine's kit install took a
# minute of a 600 s call and the stop came after the call's end: nothing came back): stop pytest with
# SIGTERM then (the suite writes an inconclusive gate.json at once, stops its servers and finishes
# report.html / junit.xml), SIGKILL 45 s later. SIGTERM, not SIGINT: started as a background job of a
# non-interactive shell, pytest inherits SIGINT ignored and would run on. An outer `timeout` would kill
# this script too, and with it the copy to $OUT below.
run=(python3 -m pytest -c pyproject.toml "$@")   # -c: options whose value is a folder work with a space too
if [ -n "${PYTEST_DEADLINE:-}" ]; then
  left=$(( PYTEST_DEADLINE - ($(date +%s) - started) ))
  [ "$left" -lt 1 ] && { echo "gpu-run: PYTEST_DEADLINE=$PYTEST_DEADLINE s passed during set-up" >&2; exit 124; }
  echo "gpu-run: pytest stops at the deadline, in $left s"
  run=(timeout -s TERM -k 45 "$left" "${run[@]}")
fi
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  "${run[@]}" 2>&1 | tee "$OUT/pytest.log"
  rc=${PIPESTATUS[0]}
else
  "${run[@]}"
  rc=$?
fi
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  for f in reports/report.html reports/gate.json reports/junit.xml reports/observations.json reports/bench-samples.json reports/stop-stacks.txt; do [ -f "$f" ] && cp "$f" "$OUT/"; done
  tar -czf "$OUT/servers.tgz" reports/servers reports/bench* 2>/dev/null || true
fi
exit $rc
