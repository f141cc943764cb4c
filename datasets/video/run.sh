#!/usr/bin/env bash
# Build PaddleRec's short-video multi-task dataset (tasks like, completion) from UCI Census-Income.
#
#   bash datasets/video/run.sh [extra datasets/census/preprocess.py flags, e.g. --no-standardize]
#   CENSUS_DATA=path/to/census-format/folder bash datasets/video/run.sh
#
# 1. bash datasets/census/run.sh "$@" (download + preprocess into datasets/census/data), unless
#    CENSUS_DATA names a census-format folder (train/, test/) to convert instead;
# 2. python datasets/video/convert.py: the same lines, labels named completion,like (meta.json).
# Writes datasets/video/data/{train,test,meta.json}, the paths of the config_video_bigdata.yaml files.
# Environment: PYTHON (default python), CENSUS_DATA.
set -euo pipefail
if [[ -n "${CENSUS_DATA:-}" ]]; then
    if [[ $# -gt 0 ]]; then
        echo "$0: the flags ($*) are for datasets/census/preprocess.py; with CENSUS_DATA set nothing is preprocessed" >&2
        exit 2
    fi
    input="$(cd "$CENSUS_DATA" && pwd)"
fi
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
if [[ -z "${CENSUS_DATA:-}" ]]; then
    bash ../census/run.sh "$@"
    input=../census/data
fi
"$PYTHON" convert.py --input "$input" --output data
echo "Done: $(pwd)/data/train and $(pwd)/data/test"
