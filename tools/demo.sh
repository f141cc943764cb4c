#!/usr/bin/env bash
# The recstack demo: train DeepFM on its bundled sample data, evaluate AUC on the
# test split, show where the checkpoints are, export the last one (TorchScript + ONNX,
# checked against eager) and benchmark ONNX Runtime inference on the test split.
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
for dir in "$OUT"/[0-9]*/; do
    echo "  $dir: $(cd "$dir" && ls | tr '\n' ' ')"
done
echo "== export the last checkpoint (tools/to_static.py) -> $OUT/tostatic.{pt,onnx,json}"
"$PYTHON" tools/to_static.py -m "$CONFIG" -o runner.model_save_path="$OUT" 2>&1 | grep -E "parity|exported|ERROR"
echo "== benchmark ONNX Runtime inference on the test split (tools/infer_benchmark.py)"
"$PYTHON" tools/infer_benchmark.py --model_dir "$OUT" --reader_file models/rank/deepfm/criteo_reader.py \
    --data_dir models/rank/deepfm/data/sample_data/test --batchsize 512 --cpu_threads 2 --use_gpu False \
    --enable_tensorRT False --precision fp32 --benchmark True --save_log_path "$OUT/logs"
