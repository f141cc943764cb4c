#!/usr/bin/env bash
# Regenerate the models' bundled sample data (byte-identical on every run).
#
#   bash datasets/synthetic/make_samples.sh
#
# Environment: PYTHON (default python; recstack must be importable: pip install -e .).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."   # repository root

PYTHON="${PYTHON:-python}"
GEN="datasets/synthetic/generate.py"

# dataset  model folder[:data subfolder, default sample_data]  train rows  test rows  [extra generate.py flags]
# (e2e_mm: rows are item visits = grouped lines, mean group size 4; the item PNGs go to <data subfolder>/images)
while read -r dataset folder train_rows test_rows extra; do
    sub=sample_data
    if [[ "$folder" == *:* ]]; then sub="${folder#*:}"; folder="${folder%%:*}"; fi
    out="models/${folder}/data/${sub}"
    ext=txt
    if [[ "$extra" == *"--format parquet"* ]]; then ext=parquet; fi   # the same rows as Parquet
    # shellcheck disable=SC2086  # $extra holds zero or more flags
    "$PYTHON" "$GEN" "$dataset" --rows "$train_rows" --seed 1 --output "$out/train/part-0.$ext" $extra
    # shellcheck disable=SC2086
    "$PYTHON" "$GEN" "$dataset" --rows "$test_rows" --seed 2 --output "$out/test/part-0.$ext" $extra
done <<'SAMPLES'
criteo rank/deepfm 4000 1000
criteo rank/deepfm:libsvm_sample_data 4000 1000 --layout libsvm
criteo rank/deepfm:parquet_sample_data 4000 1000 --format parquet
census multitask/mmoe 2000 500
census multitask/share_bottom 2000 500
census multitask/ple 2000 500
criteo_lr rank/logistic_regression 4000 1000
criteo rank/fm 4000 1000
criteo rank/ffm 4000 1000 --hash-dim 100003
criteo rank/dnn 4000 1000
criteo rank/wide_deep 4000 1000
criteo rank/xdeepfm 4000 1000
criteo rank/dcn 4000 1000
criteo rank/dcn_v2 4000 1000
criteo rank/deepfefm 4000 1000
criteo rank/dlrm 4000 1000
criteo rank/gatenet 4000 1000
criteo rank/finalmlp 4000 1000
criteo rank/autoint 4000 1000
criteo rank/fibinet 4000 1000 --layout tsv
criteo rank/masknet 4000 1000 --layout tsv
video_play multitask/dbmtl 4000 1000
video_play multitask/mmoe:easyrec_sample_data 4000 1000
aliccp multitask/esmm 6000 3000
aitm multitask/aitm 8000 3000
aliccp multitask/escm2 6000 3000
amazon rank/din 8000 2000
alimama rank/dmr 4000 1000
amazon rank/dien 8000 2000
amazon rank/bst 8000 2000
e2e_mm multitask/e2e_mm_dbmtl 600 200
ctr_csv rank/deepfm:tabular_sample_data 20000 4000
ctr_csv rank/dcn:tabular_sample_data 20000 4000
ctr_csv rank/dcn_v2:tabular_sample_data 20000 4000
ctr_csv rank/xdeepfm:tabular_sample_data 20000 4000
ctr_csv rank/wide_deep:tabular_sample_data 20000 4000
ctr_csv rank/dnn:tabular_sample_data 20000 4000
ctr_csv rank/dlrm:tabular_sample_data 20000 4000
ctr_csv rank/autoint:tabular_sample_data 20000 4000
ctr_csv rank/finalmlp:tabular_sample_data 20000 4000
taobao multitask/mmoe:taobao_sample_data 20000 4000
taobao multitask/dbmtl:taobao_sample_data 20000 4000
census multitask/dbmtl:census_sample_data 2000 500
SAMPLES

# Retrieval models (models/recall/*): the generator's `movielens` world in GroupLens' ML-1M files (30,000 ratings of
# 600 users and 600 movies), through datasets/movielens/preprocess.py as the real data goes (histories of at most
# 20: small files); every retrieval folder holds the same sample (train, train_sequences, test, items). The same
# run's rank_train / rank_test (the ratings with a like label) are DeepFM's data/movielens_sample_data/{train,test}
# (config_movielens.yaml).
raw="$(mktemp -d)"
trap 'rm -rf "$raw"' EXIT
"$PYTHON" "$GEN" movielens --rows 30000 --seed 1 --output "$raw" >/dev/null
"$PYTHON" datasets/movielens/preprocess.py --ratings "$raw/ratings.dat" --users "$raw/users.dat" \
    --movies "$raw/movies.dat" --output "$raw/out" --max_history 20 >/dev/null
for folder in dssm youtube_dnn sasrec mind ncf popularity; do
    for split in train train_sequences test items; do
        mkdir -p "models/recall/${folder}/data/sample_data/${split}"
        cp "$raw/out/${split}/part-0.txt" "models/recall/${folder}/data/sample_data/${split}/part-0.txt"
    done
done
for split in train test; do
    mkdir -p "models/rank/deepfm/data/movielens_sample_data/${split}"
    cp "$raw/out/rank_${split}/part-0.txt" "models/rank/deepfm/data/movielens_sample_data/${split}/part-0.txt"
done

# Short-video data (datasets/video, PaddleRec's multi-task tutorial): each census sample above with its
# labels named completion,like (lines unchanged) in data/video_sample_data/, read by config_video.yaml.
for folder in multitask/mmoe multitask/share_bottom multitask/ple; do
    "$PYTHON" datasets/video/convert.py --input "models/${folder}/data/sample_data" \
        --output "models/${folder}/data/video_sample_data" >/dev/null
done
