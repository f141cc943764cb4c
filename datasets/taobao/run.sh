#!/usr/bin/env bash
# Join Alimama's taobao display-ad files (Tianchi data set 56) into EasyRec's taobao CSV, the layout
# models/multitask/mmoe/config_backbone_bigdata.yaml reads.
#
#   bash datasets/taobao/run.sh RAW_DIR [extra preprocess.py flags, e.g. --test_days 1 --tag_days 3]
#
# The download needs a (free) Tianchi login, so this script does not fetch anything: sign in at
#   https://tianchi.aliyun.com/dataset/56   ("Ad Display/Click Data on Taobao.com")
# download raw_sample.csv.tar.gz, ad_feature.csv.tar.gz, user_profile.csv.tar.gz and, for the buy labels
# and the tag lists, behavior_log.csv.tar.gz (about 23 GB unpacked), and put them in RAW_DIR. Archives
# whose .csv is not there yet are unpacked in RAW_DIR. Without behavior_log.csv the output's buy column is
# 0 and its tag lists are empty (see README.md).
#
# Writes $OUTPUT (default datasets/taobao/data)/{train,test,meta.json}.
# Environment: PYTHON (default python), OUTPUT.
set -euo pipefail

if [[ $# -lt 1 || ! -d "$1" ]]; then
    echo "usage: bash datasets/taobao/run.sh RAW_DIR [preprocess.py flags]  (RAW_DIR: the Tianchi files)" >&2
    exit 2
fi
RAW="$(cd "$1" && pwd)"
shift
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
OUTPUT="${OUTPUT:-$HERE/data}"

for name in raw_sample ad_feature user_profile behavior_log; do
    if [[ ! -f "$RAW/$name.csv" && -f "$RAW/$name.csv.tar.gz" ]]; then
        echo "unpacking $RAW/$name.csv.tar.gz"
        tar -xzf "$RAW/$name.csv.tar.gz" -C "$RAW"
    fi
done
for name in raw_sample ad_feature user_profile; do
    if [[ ! -f "$RAW/$name.csv" ]]; then
        echo "run.sh: $RAW/$name.csv is missing (download it from https://tianchi.aliyun.com/dataset/56)" >&2
        exit 1
    fi
done
behavior=()
if [[ -f "$RAW/behavior_log.csv" ]]; then
    behavior=(--behavior_log "$RAW/behavior_log.csv")
else
    echo "run.sh: no $RAW/behavior_log.csv: buy will be 0 and the tag lists empty" >&2
fi

"$PYTHON" "$HERE/preprocess.py" --raw_sample "$RAW/raw_sample.csv" --ad_feature "$RAW/ad_feature.csv" \
    --user_profile "$RAW/user_profile.csv" "${behavior[@]}" --output "$OUTPUT" "$@"
echo "Done: $OUTPUT/train and $OUTPUT/test"
