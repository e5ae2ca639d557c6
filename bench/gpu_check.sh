#!/usr/bin/env bash
# One-shot GPU check of HeadGAN (issue 21, item 6; docs/accelerators.md, section 6). Prints ONE JSON line on stdout
# (progress on stderr): the paper-size training step in float32 and bfloat16 (samples/s, MFU, peak memory), G's
# inference at batch 1 and 32, and bench/export.py's programs deserialized and called. Within 8 minutes on one
# H100 / H200, compiles included.
#
#   bash bench/gpu_check.sh                        # on the GPU machine
#   bash bench/gpu_check.sh --smoke                # anywhere, CPU: a tiny config (also GPU_CHECK_SMOKE=1)
#   bash bench/gpu_check.sh --out gpu_check.json   # also keep the line in a file
#   bash bench/gpu_check.sh --help                 # every option
#
# Python: $PYTHON, else the project's .venv, else python3 (with jax for the GPU: pip install "jax[cuda12]").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
  PY="$(command -v python3)"
fi
# The project's packages without an install too (a bare copy of the repository on a GPU machine); an installed
# project (scripts/setup.sh: pip install -e .) is found either way.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" bench/gpu_check.py "$@"
