#!/usr/bin/env bash
# Download UCI Census-Income (KDD) and preprocess it into PaddleRec's MMoE/PLE CSV.
#
#   bash datasets/census/run.sh [extra preprocess.py flags, e.g. --no-standardize]
#
# Writes datasets/census/data/{train/train_data.txt,test/test_data.txt,meta.json},
# the paths the multitask models' config_bigdata.yaml files point at.
# Environment: PYTHON (default python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
BASE_URL="https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld"

mkdir -p raw
for name in census-income.data census-income.test; do
    if [[ ! -f "raw/${name}" ]]; then
        wget --no-check-certificate -c -O "raw/${name}.gz" "${BASE_URL}/${name}.gz"
        gunzip -f "raw/${name}.gz"
    fi
done

"$PYTHON" preprocess.py --train raw/census-income.data --test raw/census-income.test \
    --output data "$@"
echo "Done: $(pwd)/data/train and $(pwd)/data/test"
