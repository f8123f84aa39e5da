#!/usr/bin/env bash
# The main job: set up the environment, then run the `clipsurgery` command line.
# With no arguments it explains a sample photo with the real ViT-B-16 (OpenAI weights, downloaded
# once and cached) and writes clipsurgery-demo.png.
# Usage: bash scripts/run.sh [clipsurgery arguments...]
#        bash scripts/run.sh lab       (JupyterLab on the tutorial notebooks)
#        bash scripts/run.sh notebook  (Notebook 7 on them; it comes with the test extra)
# setup.sh installs only when something changed, so a call goes straight to the job.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${CLIPSURGERY_VENV:-$root/.venv}"
if [ $# -eq 0 ]; then
  set -- explain sample:cat --labels "cat,grass,sky,ground" --method both --out clipsurgery-demo.png
fi
if [ "$1" = "lab" ]; then
  shift
  exec "$venv/bin/jupyter" lab --notebook-dir="$root/notebooks" "$@"
fi
if [ "$1" = "notebook" ]; then
  shift
  if [ ! -x "$venv/bin/jupyter-notebook" ]; then
    echo "Notebook 7 is not installed in $venv: run 'bash scripts/setup.sh --test' (the test extra has it)." >&2
    exit 1
  fi
  exec "$venv/bin/jupyter" notebook --notebook-dir="$root/notebooks" "$@"
fi
exec "$venv/bin/clipsurgery" "$@"
