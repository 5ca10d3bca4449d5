#!/usr/bin/env bash
# The GPU checks still open, as one script for a session's device (a few minutes of device time):
#   1. the step's compilation with ptyjax.hostmemory's one-arena malloc forced on (PTYJAX_SYSTEM_MALLOC=0)
#      and with the default (off when a GPU backend is installed): is the malloc the GPU's 6x
#      compile-time regression (experiments/results/gpu_compile_h200.md)?
#   2. the realistic-size epoch and memory (bench_gpu.py), appended to experiments/results/bench_gpu.md.
# Usage: bash experiments/device_check.sh [OUTDIR]   (each step has its own time limit; output in OUTDIR)
set -u
out=${1:-${OUT:-/tmp/ptyjax_device_check}}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
python -c "import jax; print(jax.__version__, jax.devices())" | tee "$out/devices.txt"
# SIGINT, not SIGTERM: a terminated ptxas reports "error code 15", which reads like a crash.
PTYJAX_SYSTEM_MALLOC=0 timeout -s INT 240 python "$here/bench_compile.py" | tee "$out/compile_malloc_on.md"
timeout -s INT 240 python "$here/bench_compile.py" | tee "$out/compile_default.md"
timeout -s INT 300 python "$here/bench_gpu.py" -o "$out/bench_gpu.md" | tee "$out/bench_gpu.log"
