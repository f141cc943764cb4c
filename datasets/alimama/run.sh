#!/usr/bin/env bash
# Download PaddleRec's preprocessed Alimama (Ali_Display_Ad_Click) data for DMR, as PaddleRec's
# datasets/Ali_Display_Ad_Click/run.sh does: dataset_full.zip, whose work/train_sorted.csv goes to big_train/
# and work/test.csv to big_test/, the folders models/rank/dmr/config_bigdata.yaml reads.
#
#   bash datasets/alimama/run.sh
#
# Environment: PYTHON (default python; unpacks the zip, so `unzip` is not needed), BASE_URL (a mirror).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
BASE_URL="${BASE_URL:-https://paddlerec.bj.bcebos.com/datasets/dmr}"
ZIP=dataset_full.zip

if [[ ! -s big_train/train_sorted.csv || ! -s big_test/test.csv ]]; then
    if [[ ! -s "$ZIP" ]]; then
        wget --no-check-certificate -c -O "$ZIP.part" "${BASE_URL}/${ZIP}"
        mv "$ZIP.part" "$ZIP"
    fi
    rm -rf unpacked
    "$PYTHON" -m zipfile -e "$ZIP" unpacked
    for pair in big_train:work/train_sorted.csv big_test:work/test.csv; do
        dir="${pair%%:*}"
        member="unpacked/${pair#*:}"
        if [[ ! -s "$member" ]]; then
            echo "run.sh: $(pwd)/$ZIP holds no ${pair#*:} (PaddleRec's layout: work/train_sorted.csv, work/test.csv)" >&2
            exit 1
        fi
        mkdir -p "$dir"
        mv "$member" "$dir/"
    done
    rm -rf unpacked
fi
echo "Done: $(pwd)/big_train and $(pwd)/big_test"
