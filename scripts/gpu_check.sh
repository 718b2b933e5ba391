#!/usr/bin/env bash
# The first check on a machine with a CUDA GPU (docs/benchmarks.md, "First check on a GPU machine"):
#   bash scripts/gpu_check.sh --out gpu_check.json
# With random weights, within --budget-s (default 420 s; about 8 minutes in all on one H100 / H200): the
# wan2.1-t2v-1.3b transformer's streaming FPS at 480x832 (1 and 4 steps), the Wan VAE's streaming encode and
# decode FPS, 5 training steps of the teacher, ODE init and DMD, and the peak GPU memory of each. It prints a
# table and writes JSON. Without CUDA it runs the same code at tiny-wan size in seconds (what CI runs).
# Every option goes to `realcam bench gpu` (--help lists them); PYTHON picks the interpreter. Relative paths are
# the caller's; this checkout's realcam is the one imported.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m realcam bench gpu "$@"
