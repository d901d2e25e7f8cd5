#!/usr/bin/env bash
# Paper-scale reproduction: train every standard task config on the user's data, then write the
# table of docs/results.md (dataset, backbone, variant, best / last epoch accuracy, parameters).
#
#   benchmarks/reproduce.sh DATA_ROOT [RUNS_DIR]
#
# DATA_ROOT holds the official layouts the configs name (ModelNet40 normal_resampled,
# ScanObjectNN h5_files, ModelNetFewshot, ShapeNetPart, ModelNet10 pcd); a config whose data is
# missing still gets a row saying why. Point-MAE configs need its pretrain.pth
# (--set model.backbone.checkpoint=...), ViT-B/16 configs timm weights in the local cache.
# Environment: PYTHON (the interpreter, default python), CONFIGS (names under configs/, default: all standard ones), EPOCHS (override
# train.epochs, e.g. 1 for a smoke run), SET (extra "key=value" overrides, space-separated),
# RESULTS (table file, default docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: benchmarks/reproduce.sh DATA_ROOT [RUNS_DIR]" >&2
  exit 2
fi
DATA_ROOT=$(cd "$1" && pwd)
RUNS=${2:-runs/reproduce}
RESULTS=${RESULTS:-docs/results.md}
PYTHON=${PYTHON:-python}
DEFAULT_CONFIGS=""
for task in modelnet40 scanobjectnn_obj_bg scanobjectnn_obj_only scanobjectnn_pb_t50_rs fewshot_modelnet40 shapenetpart; do
  for backbone in vit_b16 minilm point_mae; do DEFAULT_CONFIGS+=" ${task}_${backbone}"; done
done
CONFIGS=${CONFIGS:-$DEFAULT_CONFIGS}
export APPT_DATA="$DATA_ROOT" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$RUNS"
for name in $CONFIGS; do
  args=(train --config "configs/$name.yaml" --no-progress --set "run_dir=$RUNS/$name")
  if [ -n "${EPOCHS:-}" ]; then args+=(--set "train.epochs=$EPOCHS"); fi
  for kv in ${SET:-}; do args+=(--set "$kv"); done
  echo "== $name"
  if "$PYTHON" -m appt "${args[@]}" > "$RUNS/$name.log" 2>&1; then
    tail -n 3 "$RUNS/$name.log"
  else
    echo "   failed: $(grep -v '^\s*$' "$RUNS/$name.log" | tail -n 1)"
  fi
done
"$PYTHON" benchmarks/results_table.py "$RUNS" $CONFIGS --out "$RESULTS"
echo "wrote $RESULTS"
