#!/usr/bin/env bash
# Download the full Criteo data in PaddleRec's slot format.
#
#   bash datasets/criteo/run.sh          # PaddleRec's preprocessed slot data (default)
#   bash datasets/criteo/run.sh --raw    # raw Kaggle dac data + our preprocess.py
#   bash datasets/criteo/run.sh --raw-tsv  # raw Kaggle dac data, split but kept as raw TSV
#
# Both write datasets/criteo/slot_train_data_full/ and slot_test_data_full/
# (the paths the models' config_bigdata.yaml files point at). With --raw, the
# first SPLIT_LINE (default 41,256,555, PaddleRec's split) lines of train.txt
# become the train split and the rest the test split; ids are stable CRC-32
# hashes, so they differ from PaddleRec's own (salted hash()) files.
# --raw-tsv splits train.txt the same way but keeps the raw lines (label \t I1..I13 \t C1..C26) in
# raw_train_data_full/ and raw_test_data_full/: what the backbone models (models/rank/fibinet, masknet;
# EasyRec's Criteo configs) read through data_config.
# Environment: PYTHON (default python), SPLIT_LINE, LINES_PER_PART (default 1,000,000), CRITEO_MODE (the
# option, when none is given on the command line).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
SPLIT_LINE="${SPLIT_LINE:-41256555}"
LINES_PER_PART="${LINES_PER_PART:-1000000}"
BASE_URL="https://paddlerec.bj.bcebos.com/datasets/criteo"
RAW_URL="https://paddlerec.bj.bcebos.com/deepfm%2Fdac.tar.gz"

download() {  # download URL FILE: resumable, into FILE
    wget --no-check-certificate -c -O "$2" "$1"
}

MODE="${1:-${CRITEO_MODE:-}}"   # the option, or CRITEO_MODE=--raw-tsv (test_tipc's whole_data_prepare)
case "$MODE" in
    ""|--raw|--raw-tsv) ;;
    *) echo "run.sh: unknown option '$MODE' (expected none, --raw or --raw-tsv)" >&2; exit 2 ;;
esac

if [[ -z "$MODE" ]]; then
    for split in train test; do
        name="slot_${split}_data_full"
        download "${BASE_URL}/${name}.tar.gz" "${name}.tar.gz"
        tar -xzf "${name}.tar.gz"
        rm -f "${name}.tar.gz"
    done
    echo "Done: $(pwd)/slot_train_data_full and $(pwd)/slot_test_data_full"
    exit 0
fi

# --raw / --raw-tsv: Criteo Kaggle display-advertising challenge data (PaddleRec's mirror).
if [[ ! -f train.txt ]]; then
    download "$RAW_URL" dac.tar.gz
    tar -xzf dac.tar.gz      # -> train.txt (45,840,617 labelled lines), test.txt (unlabelled, unused)
    [[ -f train.txt ]] || { echo "run.sh: dac.tar.gz did not contain train.txt" >&2; exit 1; }
    rm -f dac.tar.gz
fi

if [[ "$MODE" == "--raw-tsv" ]]; then
    # keep RANGE_CMD OUT_DIR: raw lines from RANGE_CMD -> OUT_DIR/part-000.txt, ... (unchanged)
    keep() {
        rm -rf "$2.tmp" && mkdir -p "$2.tmp"
        $1 train.txt | split -l "$LINES_PER_PART" -d -a 3 --additional-suffix=.txt - "$2.tmp/part-" \
            || { echo "run.sh: $2 failed" >&2; exit 1; }
        rm -rf "$2" && mv "$2.tmp" "$2"
    }
    keep "head -n $SPLIT_LINE" raw_train_data_full
    keep "tail -n +$((SPLIT_LINE + 1))" raw_test_data_full
    echo "Done: $(pwd)/raw_train_data_full and $(pwd)/raw_test_data_full (raw TSV; raw files kept)"
    exit 0
fi

# convert SPLIT_CMD OUT_DIR FIRST_LINE: raw lines from SPLIT_CMD -> OUT_DIR/part-000, ...
convert() {
    rm -rf "$2.tmp" && mkdir -p "$2.tmp"
    $1 train.txt | "$PYTHON" preprocess.py \
        | split -l "$LINES_PER_PART" -d -a 3 - "$2.tmp/part-" \
        || { echo "run.sh: $2 failed (its stdin line 1 is line $3 of train.txt)" >&2; exit 1; }
    rm -rf "$2" && mv "$2.tmp" "$2"
}
convert "head -n $SPLIT_LINE" slot_train_data_full 1 &
train_pid=$!
convert "tail -n +$((SPLIT_LINE + 1))" slot_test_data_full $((SPLIT_LINE + 1)) &
test_pid=$!
wait "$train_pid"
wait "$test_pid"
echo "Done: $(pwd)/slot_train_data_full and $(pwd)/slot_test_data_full (raw files kept: train.txt, test.txt)"
