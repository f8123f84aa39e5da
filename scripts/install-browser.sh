#!/usr/bin/env bash
# End-to-end tests drive Debian's Chromium through Playwright (Playwright's own browser download
# is not used). Installs it when missing and we are root; otherwise says what to do.
set -euo pipefail
browser="${CLIPSURGERY_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "[browser] installing Debian's chromium for the end-to-end tests"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "[browser] $browser not found: install Chromium (e.g. 'sudo apt-get install chromium')" >&2
  echo "          or set CLIPSURGERY_CHROMIUM to a Chromium binary." >&2
  exit 1
fi
