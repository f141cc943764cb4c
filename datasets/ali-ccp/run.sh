#!/usr/bin/env bash
# Download PaddleRec's preprocessed Ali-CCP data for ESMM, as PaddleRec's datasets/ali-ccp/run.sh
# does: traindata_10w.csv into train_data/ and testdata_10w.csv into test_data/, the folders
# models/multitask/esmm/config_bigdata.yaml reads.
#
#   bash datasets/ali-ccp/run.sh
#
# With the argument `aitm`: PaddleRec's Ali-CCP data in AITM's layout instead, as PaddleRec's
# datasets/ali-cpp_aitm/run.sh downloads it (converted by its process_public_data.py): ctr_cvr.train into
# aitm_data/train/ and ctr_cvr.test into aitm_data/test/, the folders models/multitask/aitm/config_bigdata.yaml reads.
#
#   bash datasets/ali-ccp/run.sh aitm     (or: LAYOUT=aitm bash datasets/ali-ccp/run.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

case "${1:-${LAYOUT:-esmm}}" in
    esmm) BASE_URL="https://paddlerec.bj.bcebos.com/esmm"
          files=(train_data/traindata_10w.csv test_data/testdata_10w.csv) ;;
    aitm) BASE_URL="https://paddlerec.bj.bcebos.com/datasets/aitm"
          files=(aitm_data/train/ctr_cvr.train aitm_data/test/ctr_cvr.test) ;;
    *) echo "usage: bash datasets/ali-ccp/run.sh [aitm]" >&2; exit 2 ;;
esac

for pair in "${files[@]}"; do
    dir="${pair%/*}"
    name="${pair##*/}"
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
echo "Done: $(pwd)/${files[0]%/*} and $(pwd)/${files[1]%/*}"
