#!/usr/bin/env bash
# Create .venv (once) and install hdee into it. Sourced by scripts/run and scripts/test.
# torch is pinned first: on machines whose pip index serves a local CPU build of 2.13.0,
# an unpinned torch would pull a multi-GB CUDA build. Any torch >= 2.13 works elsewhere.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HDEE_VENV:-$root/.venv}"
stamp="$venv/.hdee-installed"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check "torch==${HDEE_TORCH_VERSION:-2.13.0}"
  "$venv/bin/pip" install -q --disable-pip-version-check -e "$root[test]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
