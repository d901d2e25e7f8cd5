#!/usr/bin/env bash
# Issue 14, item 3: the decisive learning run on one CUDA GPU, from a run bundle.
# appt / encoder_only / random_backbone x seeds 0, 1, 2 on the full ModelNet10 training split
# (3,991 shapes, tested on all 908), 60 epochs each, bf16 autocast; paired by seed.
#
#   # here (CPU, with the data): the bundle of configs/modelnet10_minilm.yaml, 49.33 MiB
#   appt bundle --config configs/modelnet10_minilm.yaml --out gpu_bundle --no-progress
#   # on the GPU machine (no network, appt not installed: src/ goes on PYTHONPATH), e.g. one device
#   # call carrying gpu_bundle (docs/benchmarks.md, section 9):
#   set -o pipefail; APPT_BUNDLE=gpu_bundle PYTHON=python3 bash benchmarks/gpu_learning.sh 2>&1 | tee $OUT/gpu_learning.log
#
# Writes two files under $OUT (default: a fresh temporary folder), none in sub-folders (the device
# tool brings back 8 files, 2 folders deep): gpu_learning.json (the collector,
# gpu_learning_collect.py: per run its summary, test evaluations and resolved config; per
# variant the mean; the paired differences appt - encoder_only and appt - random_backbone with 95 %
# t-intervals) and gpu_learning_runs.tar.gz (every run folder's summary.json, metrics.jsonl,
# config.yaml and log; no checkpoints). The run folders themselves live in $WORK (default: a
# temporary folder).
#
# Sizing: one GPU call may run 10 minutes, so the 9 runs get 9 minutes (MAX_MINUTES, or
# --max-minutes N), i.e. one minute of GPU per run: 125 steps x 60 epochs = 7,500 optimizer steps
# plus 6 test passes (EVAL_EVERY=10), so about 8 ms a step. Not measured on a GPU (none was lent
# so far), and a CPU step time says little about a latency-bound H200 step, so the script guards
# itself instead: the three variants of a seed run side by side on the GPU (PARALLEL=1; each is
# small and launch-bound), a seed is started only if the previous seed's wall time still fits before
# the deadline, and every run is killed at the deadline; the collector then reports the seeds that
# finished (and the last test figure of cut runs, as partial). If even seed 0 cannot finish, the
# JSON says so and gives the epochs reached: lower EPOCHS and run again.
#
# Make the bundle with this appt: random_backbone builds its random twin from the pretrained bundle,
# which bundles made before that was possible refuse (manifest.json: backbone.random_twin). APPT_DATA
# is not read: the clouds come from the bundle.
#
# MiniLM only: an MPNet bundle (12 x 768) is about 191 MiB (docs/benchmarks.md, section 7), over the
# device tool's 64 MiB per call, so MPNet's half of item 3 cannot be carried to the GPU this way.
#
# Environment: APPT_BUNDLE (required), PYTHON (python), OUT, WORK, EPOCHS (60), SEEDS ("0 1 2"),
# VARIANTS ("appt encoder_only random_backbone"), PRECISION (bf16 on CUDA, else no), EVAL_EVERY (10),
# NUM_WORKERS (2 loader workers per run), PARALLEL (1: the variants of a seed at once; 0: one by one),
# MAX_MINUTES (9), EXTRA_SETS (more --set overrides for every run, space-separated), OMP_NUM_THREADS (4).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == --max-minutes ]]; then MAX_MINUTES="$2"; shift 2; fi
[[ $# -eq 0 ]] || { echo "usage: $0 [--max-minutes N]" >&2; exit 2; }
BUNDLE="${APPT_BUNDLE:?set APPT_BUNDLE to a folder made by appt bundle}"
BUNDLE="$(cd "$BUNDLE" && pwd)"
PYTHON="${PYTHON:-python}"
OUT="${OUT:-$(mktemp -d)}"
WORK="${WORK:-$(mktemp -d)}"
EPOCHS="${EPOCHS:-60}"
SEEDS="${SEEDS:-0 1 2}"
VARIANTS="${VARIANTS:-appt encoder_only random_backbone}"
EVAL_EVERY="${EVAL_EVERY:-10}"
NUM_WORKERS="${NUM_WORKERS:-2}"
PARALLEL="${PARALLEL:-1}"
MAX_MINUTES="${MAX_MINUTES:-9}"
EXTRA_SETS="${EXTRA_SETS:-}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"  # 3 runs side by side share the node's CPUs (16 on the H200 node)
# Run this checkout's appt even where it is not installed (an offline node with a fixed Python).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
# One torch import for the whole script: CUDA or not, and what the collector records of the machine.
machine=$("$PYTHON" -c "import platform, torch; c = torch.cuda.is_available()
print(int(c), torch.__version__, platform.python_version(), torch.cuda.get_device_name(0) if c else 'none')")
read -r cuda torch_version python_version gpu <<< "$machine"
if [[ "$cuda" == 1 ]]; then PRECISION="${PRECISION:-bf16}"; else PRECISION="${PRECISION:-no}"; fi
mkdir -p "$OUT" "$WORK/runs"
deadline=$(( start + $(awk -v m="$MAX_MINUTES" 'BEGIN { print int(m * 60) }') ))
echo "gpu_learning.sh: bundle $BUNDLE, cuda=$cuda ($gpu), precision $PRECISION, $EPOCHS epochs, seeds [$SEEDS]," \
     "variants [$VARIANTS], deadline in $MAX_MINUTES min; runs in $WORK/runs"

run_one() {  # variant seed: one training run, killed at the deadline; writes runs/<id>.status.json
    local id="$1-s$2" t0 rc=0
    t0=$(date +%s)
    local sets=(model.variant="$1" train.seed="$2" train.epochs="$EPOCHS" train.precision="'$PRECISION'"
                train.eval_every="$EVAL_EVERY" data.num_workers="$NUM_WORKERS" run_dir="$WORK/runs/$id")
    # shellcheck disable=SC2206  # EXTRA_SETS is split on spaces on purpose
    sets+=($EXTRA_SETS)
    local args=()
    for s in "${sets[@]}"; do args+=(--set "$s"); done
    timeout --kill-after=15 $(( deadline > t0 ? deadline - t0 : 1 )) \
        "$PYTHON" -m appt.cli.main train --bundle "$BUNDLE" "${args[@]}" --no-progress \
        > "$WORK/runs/$id.log" 2>&1 || rc=$?
    printf '{"id": "%s", "variant": "%s", "seed": %s, "rc": %s, "seconds": %s}\n' \
        "$id" "$1" "$2" "$rc" "$(( $(date +%s) - t0 ))" > "$WORK/runs/$id.status.json"
    echo "  $id: exit $rc after $(( $(date +%s) - t0 )) s$( ((rc == 124 || rc == 137)) && echo ' (cut at the deadline)')"
}

last_wave=0
for seed in $SEEDS; do
    now=$(date +%s)
    if (( now + last_wave > deadline )); then
        echo "seed $seed not started: the last seed took $last_wave s, $(( deadline - now )) s are left"
        continue
    fi
    echo "seed $seed: starting [$VARIANTS] at +$(( now - start )) s"
    for variant in $VARIANTS; do
        if [[ "$PARALLEL" == 1 ]]; then run_one "$variant" "$seed" & else run_one "$variant" "$seed"; fi
    done
    wait
    last_wave=$(( $(date +%s) - now ))
done

"$PYTHON" benchmarks/gpu_learning_collect.py --runs "$WORK/runs" --bundle "$BUNDLE" --out "$OUT/gpu_learning.json" \
    --settings epochs="$EPOCHS" seeds="$SEEDS" variants="$VARIANTS" precision="$PRECISION" eval_every="$EVAL_EVERY" \
    num_workers="$NUM_WORKERS" parallel="$PARALLEL" max_minutes="$MAX_MINUTES" extra_sets="$EXTRA_SETS" \
    cuda="$cuda" gpu="$gpu" torch="$torch_version" python="$python_version" host_cpus="$(nproc)"
tar -czf "$OUT/gpu_learning_runs.tar.gz" --exclude=checkpoints -C "$WORK/runs" .
echo "gpu_learning.sh: took $(( $(date +%s) - start )) s; results in $OUT"
