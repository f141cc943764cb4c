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

# dataset  model folder            train rows  test rows
while read -r dataset folder train_rows test_rows; do
    out="models/${folder}/data/sample_data"
    "$PYTHON" "$GEN" "$dataset" --rows "$train_rows" --seed 1 --output "$out/train/part-0.txt"
    "$PYTHON" "$GEN" "$dataset" --rows "$test_rows" --seed 2 --output "$out/test/part-0.txt"
done <<'SAMPLES'
criteo rank/deepfm 4000 1000
census multitask/mmoe 2000 500
SAMPLES
