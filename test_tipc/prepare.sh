#!/usr/bin/env bash
# Prepare the data of one model's chain test (PaddleRec's test_tipc/prepare.sh):
#
#   bash test_tipc/prepare.sh test_tipc/configs/<model>/train_infer_python.txt <mode>
#
# lite data: the first `lite_lines` lines of each file of the model's bundled sample data (the
# config.yaml's train/test folders); whole data: the folders config_bigdata.yaml reads, made by the
# `whole_data_prepare` command when they are missing (they are linked, not copied). whole_infer also
# needs a checkpoint: `infer_model`, trained here on the lite data when it holds none.
# Data go to $TIPC_WORK/data/<model>/{train,infer} (TIPC_WORK defaults to test_tipc); the mode's old
# output folder $TIPC_WORK/output/<model>/<mode> is removed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source test_tipc/common_func.sh

if [ $# -ne 2 ]; then
    echo "usage: bash test_tipc/prepare.sh test_tipc/configs/<model>/train_infer_python.txt <mode>" >&2
    exit 2
fi
FILENAME=$1
MODE=$2
func_check_mode "${MODE}"
[ -f "${FILENAME}" ] || { echo "config '${FILENAME}' does not exist" >&2; exit 2; }

model_name=$(func_get "${FILENAME}" model_name)
python=${PYTHON:-$(func_get "${FILENAME}" python python)}
WORK=${TIPC_WORK:-test_tipc}
DATA="${WORK}/data/${model_name}"
configs=$(func_get "${FILENAME}" config)
lite_config=$(func_mode_value "${configs}" lite_train_lite_infer)
mode_config=$(func_mode_value "${configs}" "${MODE}")
lines=$(func_get "${FILENAME}" lite_lines 200)
[ -n "${mode_config}" ] || { echo "${FILENAME}: key 'config' has no value for ${MODE}" >&2; exit 2; }

# data_dirs CONFIG: its resolved runner.train_data_dir and runner.test_data_dir, one per line
function data_dirs() {
    "${python}" -c 'import sys
from recstack.config import load_config
c = load_config(sys.argv[1])
print(c.get("runner.train_data_dir")); print(c.get("runner.test_data_dir"))' "$1"
}

# copy_lite SRC DST: the first $lines lines of each data file
function copy_lite() {
    local f
    for f in "$1"/*; do
        [ -f "${f}" ] && head -n "${lines}" "${f}" > "$2/$(basename "${f}")"
    done
    return 0
}

# link_whole SRC DST: link each data file (whole datasets are large)
function link_whole() {
    local f
    for f in "$1"/*; do
        [ -f "${f}" ] && ln -s "$(cd "$(dirname "${f}")" && pwd)/$(basename "${f}")" "$2/$(basename "${f}")"
    done
    return 0
}

# ensure_whole DIR...: run whole_data_prepare when a folder is missing or empty
function ensure_whole() {
    local dir missing=0
    for dir in "$@"; do
        [ -n "$(ls -A "${dir}" 2>/dev/null)" ] || missing=1
    done
    if [ "${missing}" = 1 ]; then
        local cmd
        cmd=$(func_get "${FILENAME}" whole_data_prepare)
        [ -n "${cmd}" ] || { echo "${FILENAME}: whole data missing ($*) and no whole_data_prepare command" >&2; exit 1; }
        echo "preparing the whole data: ${cmd}"
        eval "${cmd}"
        for dir in "$@"; do
            [ -n "$(ls -A "${dir}" 2>/dev/null)" ] || { echo "'${dir}' is still empty after: ${cmd}" >&2; exit 1; }
        done
    fi
}

rm -rf "${DATA}" "${WORK}/output/${model_name}/${MODE}"
mkdir -p "${DATA}/train" "${DATA}/infer"
mapfile -t lite < <(data_dirs "${lite_config}")
case "${MODE}" in
    lite_train_lite_infer)
        copy_lite "${lite[0]}" "${DATA}/train"
        copy_lite "${lite[1]}" "${DATA}/infer"
        ;;
    lite_train_whole_infer|whole_infer)
        mapfile -t whole < <(data_dirs "${mode_config}")
        ensure_whole "${whole[1]}"
        copy_lite "${lite[0]}" "${DATA}/train"
        link_whole "${whole[1]}" "${DATA}/infer"
        ;;
    whole_train_whole_infer)
        mapfile -t whole < <(data_dirs "${mode_config}")
        ensure_whole "${whole[0]}" "${whole[1]}"
        link_whole "${whole[0]}" "${DATA}/train"
        link_whole "${whole[1]}" "${DATA}/infer"
        ;;
esac
# item images of grouped input (GroupRTPInput lines name ../images/<file>, relative to their data file's folder;
# linked whole files resolve to their real folder): the lite copies see the sample data's images through a link
if [ -d "${lite[0]}/../images" ]; then ln -s "$(cd "${lite[0]}/../images" && pwd)" "${DATA}/images"; fi

if [ "${MODE}" = "whole_infer" ]; then
    pretrained=$(func_mode_value "$(func_get "${FILENAME}" infer_model)" "${MODE}")
    pretrained=${pretrained:-${DATA}/pretrained}
    if [ -z "$(func_newest_epoch "${pretrained}")" ]; then
        echo "no checkpoint in ${pretrained}: training one epoch of ${mode_config} on the lite data"
        "${python}" tools/trainer.py -m "${mode_config}" -o runner.epochs=1 "runner.model_save_path=${pretrained}" \
            "runner.train_data_dir=$(func_abspath "${DATA}/train")" "runner.test_data_dir=$(func_abspath "${DATA}/infer")" \
            > "${DATA}/pretrain.log" 2>&1 || { echo "training the checkpoint failed, see ${DATA}/pretrain.log" >&2; exit 1; }
    fi
fi
echo "${model_name} ${MODE}: data ready in ${DATA} (train: $(ls "${DATA}/train" | wc -l) file(s), infer: $(ls "${DATA}/infer" | wc -l) file(s))"
