#!/usr/bin/env bash
# Generate the short-video play data set for DBMTL (is_valid_play -> play_time).
#
#   bash datasets/video_play/run.sh
#   TRAIN_ROWS=200000 TEST_ROWS=50000 bash datasets/video_play/run.sh
#
# No public data set has EasyRec's short-video fields (city, province, os, os_version, day_h, ...,
# is_valid_play, play_time), so this writes synthetic data with a planted signal and a planted
# relation (play_time depends on is_valid_play), from the same ground truth as the bundled sample
# data (datasets/synthetic/generate.py video_play, world seed 0; train seed 1, test seed 2):
# datasets/video_play/data/{train,test}/part-0.txt, the paths of models/multitask/dbmtl/config_bigdata.yaml.
# Environment: PYTHON (default python; recstack must be importable), TRAIN_ROWS (default 1000000),
# TEST_ROWS (default 100000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
TRAIN_ROWS="${TRAIN_ROWS:-1000000}"
TEST_ROWS="${TEST_ROWS:-100000}"
GEN=../synthetic/generate.py

"$PYTHON" "$GEN" video_play --rows "$TRAIN_ROWS" --seed 1 --output data/train/part-0.txt
"$PYTHON" "$GEN" video_play --rows "$TEST_ROWS" --seed 2 --output data/test/part-0.txt
echo "Done: $(pwd)/data/train and $(pwd)/data/test"
