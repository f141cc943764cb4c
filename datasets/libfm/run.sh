#!/usr/bin/env bash
# Download the frappe and MovieLens-tag CTR sets in libFM lines, as He & Chua's NFM / AFM code ships them:
# `<-1|1> <id>:1 ...`, one global id per field, fields in a fixed order (frappe: 10 fields, ids < 5382;
# MovieLens-tag: user, item, tag, ids < 90445).
#
#   bash datasets/libfm/run.sh [frappe|ml-tag|all]      # default: all
#
# Writes datasets/libfm/<set>/{train,valid,test}/part-0.txt (the papers' train / validation / test files), the
# folders models/rank/deepfm/config_libsvm_bigdata.yaml reads (frappe), and checks every line's field count and
# id range. Environment: BASE_URL (a mirror).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

BASE_URL="${BASE_URL:-https://raw.githubusercontent.com/hexiangnan/neural_factorization_machine/master/data}"
want="${1:-all}"
case "$want" in
    all) sets=(frappe ml-tag) ;;
    frappe|ml-tag) sets=("$want") ;;
    *) echo "run.sh: unknown set '$want' (expected frappe, ml-tag or all)" >&2; exit 2 ;;
esac

for name in "${sets[@]}"; do
    if [[ "$name" == frappe ]]; then fields=10; ids=5382; else fields=3; ids=90445; fi
    for split in train validation test; do
        folder="$name/$([[ "$split" == validation ]] && echo valid || echo "$split")"
        mkdir -p "$folder"
        if [[ ! -s "$folder/part-0.txt" ]]; then
            wget -c -O "$folder/part-0.txt.part" "${BASE_URL}/${name}/${name}.${split}.libfm"
            mv "$folder/part-0.txt.part" "$folder/part-0.txt"
        fi
        # every line: a label -1/0/1 and `fields` id:value tokens with ids in [0, ids)
        awk -v f="$fields" -v n="$ids" -v file="$folder/part-0.txt" '
            NF == 0 { next }
            NF - 1 != f || ($1 != "-1" && $1 != "0" && $1 != "1") {
                printf "run.sh: %s:%d: expected a label and %d id:value tokens: %s\n", file, NR, f, $0 > "/dev/stderr"
                exit 1 }
            { for (i = 2; i <= NF; i++) { split($i, t, ":"); if (t[1] + 0 < 0 || t[1] + 0 >= n) {
                printf "run.sh: %s:%d: id %s outside [0, %d)\n", file, NR, t[1], n > "/dev/stderr"; exit 1 } }
              lines++; pos += ($1 == "1") }
            END { if (lines == 0) { printf "run.sh: %s holds no lines\n", file > "/dev/stderr"; exit 1 }
                  printf "%s: %d lines, %d positive\n", file, lines, pos }' "$folder/part-0.txt"
    done
done
echo "Done: $(pwd)/<set>/{train,valid,test}"
