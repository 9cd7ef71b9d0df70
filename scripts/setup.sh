#!/usr/bin/env bash
# Installs difflab and what it needs on a fresh Debian machine (run as root, or with sudo available).
#   bash scripts/setup.sh          # the library, the CLI and Fashion-MNIST
#   bash scripts/setup.sh --test   # also the test dependencies (diffusers as an oracle, Playwright + Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PY=${PYTHON:-python3}

APT_PACKAGES=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || APT_PACKAGES+=(dataset-fashion-mnist)
# The browser test drives Debian's Chromium through Playwright (never Playwright's own browser download).
[ "${1:-}" != "--test" ] || [ -x /usr/bin/chromium ] || APT_PACKAGES+=(chromium)
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PACKAGES[@]}"
fi
# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
$PY -m pip install -q torch==2.13.0
if [ "${1:-}" = "--test" ]; then
  $PY -m pip install -q -e ".[test]"
else
  $PY -m pip install -q -e .
fi
