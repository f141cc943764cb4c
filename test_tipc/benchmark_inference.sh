#!/usr/bin/env bash
# The latency table of doc/inference.md: ONNX Runtime vs TorchScript vs eager, per-batch inference time
# at batch 1, 64 and 2048 with 1 and 2 threads, for DeepFM and MMoE (trained on their sample data).
#
#   bash test_tipc/benchmark_inference.sh            (OUT=... work folder, default output/bench_inference;
#                                                     RUNS=... timed passes per cell, default 5)
#
# Each cell is one tools/infer_benchmark.py process: 10 warm-up batches, then RUNS timed passes over
# the same batches (at most 2,000 / 400 / 24 batches at batch 1 / 64 / 2048); the cell is the median
# over the passes of each pass's p50 per-batch inference time (ms). Data: 50,000 generated test rows
# per model (datasets/synthetic, seed 2). Run it on a quiet machine: OMP_WAIT_POLICY=PASSIVE and
# onnxruntime's spinning off (the tool's defaults), threads as listed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
OUT="${OUT:-output/bench_inference}"
RUNS="${RUNS:-5}"

mkdir -p "$OUT"
for model in deepfm mmoe; do
    case $model in
        deepfm) config=models/rank/deepfm/config.yaml dataset=criteo ;;
        mmoe) config=models/multitask/mmoe/config.yaml dataset=census ;;
    esac
    data="$OUT/$model/data"
    if [ ! -f "$data/part-0.txt" ]; then
        "$PYTHON" datasets/synthetic/generate.py "$dataset" --rows 50000 --seed 2 --output "$data/part-0.txt" >&2
    fi
    if [ ! -f "$OUT/$model/tostatic.json" ]; then
        "$PYTHON" tools/trainer.py -m "$config" -o runner.model_save_path="$OUT/$model" > "$OUT/$model/trainer_console.log" 2>&1  # (train.log: the trainer's own)
        "$PYTHON" tools/to_static.py -m "$config" -o runner.model_save_path="$OUT/$model" > "$OUT/$model/export.log" 2>&1
    fi
done

printf "model\tthreads\tbatch\tbackend\tp50_ms\tp99_ms\tsamples_per_s\n"
for model in deepfm mmoe; do
    for threads in 1 2; do
        for batch in 1 64 2048; do
            case $batch in 1) max=2000 ;; 64) max=400 ;; *) max=24 ;; esac
            for backend in onnxruntime torchscript eager; do
                report=$("$PYTHON" tools/infer_benchmark.py --model_dir "$OUT/$model" --data_dir "$OUT/$model/data" \
                    --batchsize "$batch" --cpu_threads "$threads" --backend "$backend" --benchmark True \
                    --runs "$RUNS" --max_batches "$max" 2>/dev/null)
                p50=$(sed -n 's/^inference p50 per pass(ms\/batch): .*(median \([0-9.]*\))$/\1/p' <<< "$report")
                [ -n "$p50" ] || p50=$(sed -n 's/^inference_time(ms\/batch): mean [0-9.]*, p50 \([0-9.]*\),.*/\1/p' <<< "$report")
                p99=$(sed -n 's/^inference_time(ms\/batch): .*p99 \([0-9.]*\)$/\1/p' <<< "$report")
                ips=$(sed -n 's/^samples\/s: \([0-9.]*\) .*/\1/p' <<< "$report")
                printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$model" "$threads" "$batch" "$backend" "$p50" "$p99" "$ips"
            done
        done
    done
done
