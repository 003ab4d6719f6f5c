#!/usr/bin/env bash
# GPU smoke check of facepriv: embedding, decoder training and a BIM cloak on CUDA vs the CPU.
#
#   benchmarks/gpu_smoke.sh [CROPS_DIR] [--n 64] [--steps 5] [--cloaks 8] [--eps 4] [--cpu-only]
#
# CROPS_DIR is a folder of face photos with labels.csv (default ../shared/data/celeba-crops).
# Prints a table; exits 1 when a check fails. Without CUDA it says so, runs the CPU half and
# exits 0. PYTHON overrides the interpreter (default: the repository's .venv, else python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
  py="$repo/.venv/bin/python"
else
  py="python3"
fi
exec "$py" "$here/gpu_smoke.py" "$@"
