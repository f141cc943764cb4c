#!/usr/bin/env bash
# Download PaddleRec's preprocessed Ali-CCP data for ESMM, as PaddleRec's datasets/ali-ccp/run.sh
# does: traindata_10w.csv into train_data/ and testdata_10w.csv into test_data/, the folders
# models/multitask/esmm/config_bigdata.yaml reads.
#
#   bash datasets/ali-ccp/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

BASE_URL="https://paddlerec.bj.bcebos.com/esmm"

for pair in train_data/traindata_10w.csv test_data/testdata_10w.csv; do
    dir="${pair%%/*}"
    name="${pair#*/}"
    mkdir -p "$dir"
    if [[ ! -s "$dir/$name" ]]; then
        wget --no-check-certificate -c -O "$dir/$name.part" "${BASE_URL}/${name}"
        mv "$dir/$name.part" "$dir/$name"
    fi
    if [[ ! -s "$dir/$name" ]]; then
        echo "run.sh: $(pwd)/$dir/$name is empty after the download" >&2
        exit 1
    fi
done
echo "Done: $(pwd)/train_data and $(pwd)/test_data"
