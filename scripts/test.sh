#!/usr/bin/env bash
# The whole test suite: unit tests, notebook execution, real-browser end-to-end tests.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" --test
bash "$root/scripts/install-browser.sh"
venv="${CLIPSURGERY_VENV:-$root/.venv}"
cd "$root"
# Weights are never downloaded by the tests; make any accidental hub access fail at once.
export HF_HUB_OFFLINE=1
exec "$venv/bin/python" -m pytest -ra "$@"
