#!/usr/bin/env bash
# Download GroupLens's MovieLens-1M and build the leave-last-one-out data of the retrieval and ranking stages.
#
#   bash datasets/movielens/run.sh [RAW_DIR] [extra preprocess.py flags, e.g. --max_history 50 --min_ratings 2]
#
# Without RAW_DIR (or with "-"), ml-1m.zip (about 5.9 MB) is downloaded from GroupLens into
# datasets/movielens/raw/, its MD5 checked and unpacked there (raw/ml-1m/{ratings,users,movies}.dat). With
# RAW_DIR, a folder that already holds ratings.dat, users.dat and movies.dat, nothing is downloaded.
# The data is GroupLens's: read raw/ml-1m/README (research use; no redistribution) before using it.
#
# Writes $OUTPUT (default datasets/movielens/data)/{train,train_sequences,test,items,rank_train,rank_test}/part-0.txt.
# Environment: PYTHON (default python), OUTPUT, URL (a mirror of ml-1m.zip).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
OUTPUT="${OUTPUT:-$HERE/data}"
URL="${URL:-https://files.grouplens.org/datasets/movielens/ml-1m.zip}"
MD5="c4d9eecfca2ab87c1945afe126590906"

download() {  # download URL FILE: into FILE.part, renamed when complete
    if command -v curl >/dev/null; then
        curl -fL --retry 3 -o "$2.part" "$1"
    else
        wget -O "$2.part" "$1"
    fi
    mv "$2.part" "$2"
}

md5_of() {  # the MD5 of a file (coreutils' md5sum, or Python's hashlib)
    if command -v md5sum >/dev/null; then
        md5sum "$1" | cut -d' ' -f1
    else
        "$PYTHON" -c 'import hashlib, sys; print(hashlib.md5(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

if [[ $# -ge 1 && "$1" != --* ]]; then
    if [[ "$1" == "-" ]]; then
        shift
    else
        if [[ ! -d "$1" ]]; then
            echo "run.sh: $1 is not a folder (expected one with ratings.dat, users.dat, movies.dat)" >&2
            exit 2
        fi
        RAW="$(cd "$1" && pwd)"
        shift
    fi
fi
if [[ -z "${RAW:-}" ]]; then
    mkdir -p "$HERE/raw"
    zip="$HERE/raw/ml-1m.zip"
    if [[ ! -f "$zip" ]]; then
        download "$URL" "$zip"
    fi
    got="$(md5_of "$zip")"
    if [[ "$got" != "$MD5" ]]; then
        echo "run.sh: $zip has MD5 $got, expected $MD5 (a partial or changed download: remove it and run again)" >&2
        exit 1
    fi
    "$PYTHON" -m zipfile -e "$zip" "$HERE/raw/"
    RAW="$HERE/raw/ml-1m"
fi
for name in ratings users movies; do
    [[ -f "$RAW/$name.dat" ]] || { echo "run.sh: $RAW/$name.dat is missing" >&2; exit 1; }
done

"$PYTHON" "$HERE/preprocess.py" --ratings "$RAW/ratings.dat" --users "$RAW/users.dat" --movies "$RAW/movies.dat" \
    --output "$OUTPUT" "$@"
echo "Done: $OUTPUT/train, train_sequences, test, items (retrieval), rank_train, rank_test (ranking)"
