#!/usr/bin/env bash
# Installs difflab and what it needs on a fresh Debian machine (run as root, or as a user with sudo).
#   bash scripts/setup.sh          # the library, the CLI and Fashion-MNIST
#   bash scripts/setup.sh --test   # also the test dependencies (diffusers as an oracle, Playwright + Chromium)
# Where it looks (for tests of this script): FASHION_MNIST_DIR (default /usr/share/datasets/fashion-mnist),
# CHROMIUM (default /usr/bin/chromium), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
FASHION_MNIST_DIR=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
TEST=0
case "${1:-}" in
  "") ;;
  --test) TEST=1 ;;
  *) echo "usage: bash scripts/setup.sh [--test]" >&2; exit 2 ;;
esac

as_root() {
  # `env` carries the variable through sudo, and is a command word of its own where there is no sudo
  if [ "$(id -u)" -eq 0 ]; then
    env DEBIAN_FRONTEND=noninteractive "$@"
  else
    sudo env DEBIAN_FRONTEND=noninteractive "$@"
  fi
}

APT_PACKAGES=()
[ -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ] || APT_PACKAGES+=(dataset-fashion-mnist)
# The browser test drives Debian's Chromium through Playwright (never Playwright's own browser download).
[ "$TEST" -eq 0 ] || [ -x "$CHROMIUM" ] || APT_PACKAGES+=(chromium)
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  by_hand="setup.sh: could not install ${APT_PACKAGES[*]}; install it by hand (apt-get install ${APT_PACKAGES[*]}) and run this again"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$by_hand: apt-get not found" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "$by_hand: not root and no sudo" >&2
    exit 1
  fi
  if ! as_root apt-get update -qq || ! as_root apt-get install -y -qq "${APT_PACKAGES[@]}"; then
    echo "$by_hand: apt-get failed" >&2
    exit 1
  fi
fi
# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
"$PY" -m pip install -q torch==2.13.0
if [ "$TEST" -eq 1 ]; then
  "$PY" -m pip install -q -e ".[test]"
else
  "$PY" -m pip install -q -e .
fi
