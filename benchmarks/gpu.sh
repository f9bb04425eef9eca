#!/usr/bin/env bash
# The GPU benchmark from a source tree, nothing installed: bash benchmarks/gpu.sh OUTDIR [--quick]
# (the same as `python -m benchmarks.gpu OUTDIR [--quick]`; PYTHON picks the interpreter).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m benchmarks.gpu "$@"
