#!/usr/bin/env bash
# GPU recipe: pack the 3-artist training data here, train the next transformer on a bare, offline GPU there.
# Usage (repo root):
#   tools/gpu_recipe.sh pack OUT.tar [--data /tmp/emoji3]       # here (CPU, data prepared): compact data for the trip
#   BUDGET=8 CHUNK=8 tools/gpu_recipe.sh run OUT [--pack P.tar]   # there (GPU): unpack, train, logs + weights -> OUT;
#                                                                 # run again to resume (each call <= CHUNK minutes)
#   tools/gpu_recipe.sh tiny OUT                                  # the same code path on a CPU, tiny preset, < 1 min
#   tools/gpu_recipe.sh latency                                   # CPU decode latency (T=8) of the GPU config
# Everything is in tools/gpu_recipe.py; this wrapper only finds a Python that has torch (PY, .venv, python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  PY=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; fi
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_recipe: $PY has no torch (python3 -c 'import torch' failed); set PY=/path/to/python with torch" >&2
  exit 3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec "$PY" tools/gpu_recipe.py "$@"
