#!/usr/bin/env bash
# Installs headless Chromium (Debian package `chromium`) for the report rendering test
# (suites/harness/test_report.py). Idempotent: does nothing when /usr/bin/chromium exists.
# Needs root (or sudo) and apt; the test fails with a clear message where Chromium is missing.
set -euo pipefail
# $CHROMIUM (a path) or chromium on PATH: nothing to do. (Ubuntu runners also ship chromium-browser or
# google-chrome, which the test accepts too; Debian's package is `chromium`.)
for exe in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [ -n "$exe" ] && command -v "$exe" >/dev/null 2>&1; then
    echo "setup-browser: $exe present ($(command -v "$exe"))"
    exit 0
  fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo" || { echo "setup-browser: need root or sudo to apt-get install chromium" >&2; exit 1; }
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
command -v chromium >/dev/null 2>&1 || { echo "setup-browser: chromium not on PATH after install" >&2; exit 1; }
echo "setup-browser: installed $(chromium --version 2>/dev/null || echo chromium)"
