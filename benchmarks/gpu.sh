#!/usr/bin/env bash
# Benchmarks 2 (training-step cost) and 3 (FPS + kNN grouping) on a CUDA GPU, bf16 mixed precision.
#
#   bash benchmarks/gpu.sh                    # on a GPU machine -> benchmarks/results/{cost,geometry}_cuda_bf16.json
#   DEVICE=cpu bash benchmarks/gpu.sh         # the same run on CPU, fp32 -> *_cpu_no.json
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh # tiny sizes, seconds (what tests/test_benchmarks.py runs)
#
# Environment: PYTHON (the interpreter, default python), DEVICE (cuda), PRECISION (bf16 on CUDA,
# no on CPU), OUT (results folder; a fresh temporary folder when QUICK=1), REPEATS (5). On CUDA the
# cost benchmark uses the APPTConfig default embedding (4 stages, k = 40), as a GPU user would. Its rows include the
# memory settings (appt+ckpt_backbone, appt+ckpt_all, appt+ckpt_selective, appt+ckpt_all+bf16:
# train.activation_checkpointing and bf16 frozen weights), the same rows as on CPU (not yet run on a GPU: the 8-minute
# sizing below predates them, and they add 4 of the 8 rows). Per backbone: 8 fresh processes for peak memory, 6
# interleaved rounds of one step per row; 3 sizes of
# geometry (appt timed alone on CUDA; its CPU contenders are timed by the CPU run).
# Offline GPU node (no network, no pypcd4 / fpsample / peft / scipy, appt not installed): stage a
# run bundle and the repository, then `APPT_BUNDLE=DIR PYTHON=python3 bash benchmarks/gpu.sh`;
# the clouds come from the bundle (geometry: $APPT_DATA/modelnet40_bench_all193.npz if staged),
# and contenders or variants whose packages are missing are skipped and recorded in the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
REPEATS="${REPEATS:-5}"
if [[ "$DEVICE" == cuda* ]]; then PRECISION="${PRECISION:-bf16}"; else PRECISION="${PRECISION:-no}"; fi
if [[ "$QUICK" == 1 ]]; then OUT="${OUT:-$(mktemp -d)}"; extra=(--quick); else OUT="${OUT:-benchmarks/results}"; extra=(--repeats "$REPEATS"); fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Run this checkout's appt even where it is not installed (an offline node with a fixed Python).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
tag="${DEVICE%%:*}_${PRECISION}"
start=$(date +%s)

"$PYTHON" benchmarks/bench_cost.py --device "$DEVICE" --precision "$PRECISION" --out "$OUT/cost_${tag}.json" "${extra[@]}"
geo=()
if [[ "$DEVICE" == cuda* ]]; then geo=(--only-appt); fi  # the CPU contenders are timed in the CPU run
"$PYTHON" benchmarks/bench_geometry.py --device "$DEVICE" --out "$OUT/geometry_${tag}.json" "${extra[@]}" "${geo[@]}"

echo "gpu.sh: benchmarks 2 and 3 on $DEVICE ($PRECISION) took $(( $(date +%s) - start )) s; results in $OUT"
