#!/usr/bin/env bash
# Regenerate the models' bundled sample data (byte-identical on every run).
#
#   bash datasets/synthetic/make_samples.sh
#
# Environment: PYTHON (default python; recstack must be importable: pip install -e .).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."   # repository root

PYTHON="${PYTHON:-python}"
GEN="datasets/synthetic/generate.py"

# dataset  model folder  train rows  test rows  [extra generate.py flags]
while read -r dataset folder train_rows test_rows extra; do
    out="models/${folder}/data/sample_data"
    # shellcheck disable=SC2086  # $extra holds zero or more flags
    "$PYTHON" "$GEN" "$dataset" --rows "$train_rows" --seed 1 --output "$out/train/part-0.txt" $extra
    # shellcheck disable=SC2086
    "$PYTHON" "$GEN" "$dataset" --rows "$test_rows" --seed 2 --output "$out/test/part-0.txt" $extra
done <<'SAMPLES'
criteo rank/deepfm 4000 1000
census multitask/mmoe 2000 500
criteo_lr rank/logistic_regression 4000 1000
criteo rank/fm 4000 1000
criteo rank/ffm 4000 1000 --hash-dim 100003
criteo rank/dnn 4000 1000
criteo rank/wide_deep 4000 1000
criteo rank/xdeepfm 4000 1000
criteo rank/dcn 4000 1000
criteo rank/dcn_v2 4000 1000
criteo rank/deepfefm 4000 1000
criteo rank/dlrm 4000 1000
criteo rank/gatenet 4000 1000
SAMPLES
