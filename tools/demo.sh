#!/usr/bin/env bash
# The recstack demo: train DeepFM on its bundled sample data, evaluate AUC on the
# test split, and show where the checkpoints are.
#
#   bash tools/demo.sh          (PYTHON=... picks the interpreter, OUT=... the output folder)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python}"
OUT="${OUT:-output/demo_deepfm}"
CONFIG=models/rank/deepfm/config.yaml

echo "== train DeepFM ($CONFIG) -> $OUT"
"$PYTHON" tools/trainer.py -m "$CONFIG" -o runner.model_save_path="$OUT"
echo "== evaluate every checkpoint on the test split"
"$PYTHON" tools/infer.py -m "$CONFIG" -o runner.infer_load_path="$OUT" 2>&1 | grep -E "checkpoint epoch|ERROR"
echo "== checkpoints"
for dir in "$OUT"/*/; do
    echo "  $dir: $(cd "$dir" && ls | tr '\n' ' ')"
done
