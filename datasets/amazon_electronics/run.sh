#!/usr/bin/env bash
# Download the Amazon Electronics reviews and metadata (McAuley et al., SNAP) and build DIN's data.
#
#   bash datasets/amazon_electronics/run.sh [extra preprocess.py flags, e.g. --no-user-id]
#
# Writes datasets/amazon_electronics/data/{train/part-0.txt,test/part-0.txt,meta.json}, the folders
# models/rank/din/config_bigdata.yaml reads. Environment: PYTHON (default python), BASE_URL (a mirror).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
# The files PaddleRec's datasets/amazonElec_Din/data_process.sh and the DIN paper's code download.
BASE_URL="${BASE_URL:-http://snap.stanford.edu/data/amazon/productGraph/categoryFiles}"

mkdir -p raw
for name in reviews_Electronics_5.json.gz meta_Electronics.json.gz; do
    if [[ ! -f "raw/${name}" ]]; then
        wget -c -O "raw/${name}.part" "${BASE_URL}/${name}"
        mv "raw/${name}.part" "raw/${name}"
    fi
done

"$PYTHON" preprocess.py --reviews raw/reviews_Electronics_5.json.gz --meta raw/meta_Electronics.json.gz \
    --output data "$@"
echo "Done: $(pwd)/data/train and $(pwd)/data/test"
