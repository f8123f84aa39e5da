#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the package into it.
# Usage: bash scripts/setup.sh [--test]   (--test adds the test extra)
#
# Installs only when something changed: pyproject.toml's content, the venv's Python, or where the
# package is imported from (missing, or another checkout). The fingerprint of the last good install
# is kept in $venv/.clipsurgery-stamp[-test]; when it matches, this script prints nothing and costs
# one short Python start. pip's output goes to $venv/.clipsurgery-setup.log; on failure its tail is
# shown and the script exits non-zero.
# Environment: CLIPSURGERY_VENV (venv folder, default .venv), PYTHON (interpreter that creates it),
# CLIPSURGERY_PIP (the pip command, default "$venv/bin/python -m pip"; the tests use a fake one).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CLIPSURGERY_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
log="$venv/.clipsurgery-setup.log"

created=""
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment in $venv"
  "$python" -m venv "$venv"
  created=1
fi
pip=("$venv/bin/python" -m pip)
if [ -n "${CLIPSURGERY_PIP:-}" ]; then read -r -a pip <<< "$CLIPSURGERY_PIP"; fi

# What an install depends on. The Python part finds the package without importing it (no torch);
# -I keeps the current folder off sys.path, so a checkout in the cwd does not pass for an install.
fingerprint() {
  local pyproject
  pyproject="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
  "$venv/bin/python" -I - "$root" "$venv" <<'PY' | sed "s|^|$pyproject |"
import importlib.util, os, sys
root, venv = sys.argv[1], sys.argv[2]
spec = importlib.util.find_spec("clipsurgery_widgets")
origin = os.path.realpath(spec.origin) if spec and spec.origin else "missing"
if origin != "missing" and not origin.startswith(os.path.realpath(root) + os.sep):
    origin = "elsewhere:" + origin  # not this checkout: reinstall
script = "cli" if os.access(os.path.join(venv, "bin", "clipsurgery"), os.X_OK) else "no-cli"
print(os.path.realpath(sys.executable), sys.version.split()[0], origin, script)
PY
}

# A test install includes everything the plain one has, so its stamp satisfies both.
stamps=("$venv/.clipsurgery-stamp-test")
[ -z "$extra" ] && stamps+=("$venv/.clipsurgery-stamp")
current="$(fingerprint)"
for stamp in "${stamps[@]}"; do
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$current" ]; then
    exit 0
  fi
done

if [ -n "$created" ]; then why="first time: torch is large, expect a few minutes"; else why="pyproject.toml or the install changed"; fi
echo "[setup] installing clipsurgery-widgets${extra} into $venv ($why; log: $log)"
if ! {
  if [ -n "$created" ]; then "${pip[@]}" install --upgrade pip; fi
  "${pip[@]}" install -e "$root$extra"
} >"$log" 2>&1; then
  echo "[setup] pip failed; the last lines of $log:" >&2
  tail -n 25 "$log" >&2
  exit 1
fi
current="$(fingerprint)"
case "$current" in
  *" missing "* | *" elsewhere:"* | *" no-cli")
    echo "[setup] installed, but the package is not importable from $root; see $log" >&2
    exit 1 ;;
esac
stamp="$venv/.clipsurgery-stamp${extra:+-test}"
printf '%s\n' "$current" > "$stamp"
