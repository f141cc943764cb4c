#!/usr/bin/env bash
# Generate the grouped short-video data set with item images for E2E_MM_DBMTL (EasyRec's GroupRTPInput).
#
#   bash datasets/e2e_mm/run.sh
#   TRAIN_VISITS=20000 TEST_VISITS=5000 MEAN_GROUP_SIZE=16 bash datasets/e2e_mm/run.sh
#
# No public data set has item images together with these labels (is_valid_play, play_time) and fields,
# so this writes synthetic data with a planted signal, part of it visible only through the images
# (datasets/synthetic/generate.py e2e_mm, world seed 0; train seed 1, test seed 2):
# datasets/e2e_mm/data/{train,test}/part-0.txt and datasets/e2e_mm/data/images/item_*.png,
# the folders of models/multitask/e2e_mm_dbmtl/config_bigdata.yaml.
# Environment: PYTHON (default python; recstack and Pillow must be importable), TRAIN_VISITS (default 100000),
# TEST_VISITS (default 20000), MEAN_GROUP_SIZE (default 4), ITEMS (default 2000), UNGROUPED (1: one sample a line),
# CATE_LABEL (1: a third label column cate_label, the item's quality class, for the auxiliary image loss).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
TRAIN_VISITS="${TRAIN_VISITS:-100000}"
TEST_VISITS="${TEST_VISITS:-20000}"
MEAN_GROUP_SIZE="${MEAN_GROUP_SIZE:-4}"
ITEMS="${ITEMS:-2000}"
GEN=../synthetic/generate.py
extra=(--mean-group-size "$MEAN_GROUP_SIZE" --items "$ITEMS" --image-dir data/images)
if [[ "${UNGROUPED:-0}" == 1 ]]; then extra+=(--ungrouped); fi
if [[ "${CATE_LABEL:-0}" == 1 ]]; then extra+=(--cate-label); fi

"$PYTHON" "$GEN" e2e_mm --rows "$TRAIN_VISITS" --seed 1 --output data/train/part-0.txt "${extra[@]}"
"$PYTHON" "$GEN" e2e_mm --rows "$TEST_VISITS" --seed 2 --output data/test/part-0.txt "${extra[@]}"
echo "Done: $(pwd)/data/train, $(pwd)/data/test and $(pwd)/data/images"
