#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the package into it.
# Usage: bash scripts/setup.sh [--test]   (--test adds the test extra)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CLIPSURGERY_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment in $venv"
  "$python" -m venv "$venv"
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
# Re-install only when pyproject.toml changed since the last successful install.
stamp="$venv/.clipsurgery-installed${extra:+-test}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "[setup] installing clipsurgery-widgets${extra} (first time: torch is large, expect a few minutes)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install --quiet -e "$root$extra"
  touch "$stamp"
else
  "$venv/bin/python" -m pip install --quiet --no-deps -e "$root" >/dev/null
fi
