#!/usr/bin/env bash
# Installs everything mcrave and its tests need on a fresh Debian machine with Python 3.11.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1  # CI and fresh machines run as root
cd "$(dirname "$0")/.."
# pip and setuptools print pages of warnings (index locations, build backends): keep each step's
# stderr and show it only when the step fails
log=$(mktemp)
quiet() { if ! "$@" 2>"$log"; then cat "$log" >&2; exit 1; fi; }
quiet python3 -m pip install --quiet --upgrade pip
# torch first and pinned: this CPU wheel lies on local disk here; a bare `torch` would pull CUDA builds
quiet python3 -m pip install --quiet torch==2.13.0
quiet python3 -m pip install --quiet -e clients/python -e '.[dev]'
# protoc for protos/generate.py (and its currency test), in its own folder: see protos/README.md
quiet python3 protos/generate.py --install-tools
rm -f "$log"
pkgs=$(grep -v '^#' scripts/apt-packages.txt | xargs || true)
if [ -n "$pkgs" ] && [ "$(id -u)" = 0 ]; then
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
