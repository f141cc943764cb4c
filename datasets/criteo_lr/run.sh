#!/usr/bin/env bash
# Download the full Criteo data in PaddleRec's logistic-regression format
# (feat_idx:<id> x39, feat_value:<v> x39, label:<0/1> per line), as PaddleRec's
# datasets/criteo_lr/run.sh does: two archives that unpack to slot_train_data/ and
# slot_test_data/, the folders models/rank/logistic_regression/config_bigdata.yaml reads.
#
#   bash datasets/criteo_lr/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

BASE_URL="https://paddlerec.bj.bcebos.com/datasets/criteo_lr"

for part in data_part1 data_part2; do
    wget --no-check-certificate -c -O "${part}.tar.gz" "${BASE_URL}/${part}.tar.gz"
    tar -xzf "${part}.tar.gz"
    rm -f "${part}.tar.gz"
done
for dir in slot_train_data slot_test_data; do
    if [[ ! -d "$dir" ]] || [[ -z "$(ls -A "$dir")" ]]; then
        echo "run.sh: the archives did not unpack to $(pwd)/$dir (expected PaddleRec's layout)" >&2
        exit 1
    fi
done
echo "Done: $(pwd)/slot_train_data and $(pwd)/slot_test_data"
