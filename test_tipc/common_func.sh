#!/usr/bin/env bash
# Helpers of the test_tipc scripts: read train_infer_python.txt by key (never by line position),
# pick per-mode values, and record each step's outcome in results.log.

TIPC_MODES="lite_train_lite_infer lite_train_whole_infer whole_infer whole_train_whole_infer"

# func_get FILE KEY [DEFAULT]: the text after "KEY:" on the line that starts with it ("" or DEFAULT if none;
# "null" reads as empty). Section rulers (=====) and "##" lines are ignored by construction.
function func_get() {
    local file=$1 key=$2 default=${3:-}
    local value
    value=$(awk -v k="${key}:" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }' "${file}" | tr -d '\r')
    value="${value#"${value%%[![:space:]]*}"}"   # trim leading ...
    value="${value%"${value##*[![:space:]]}"}"   # ... and trailing blanks
    if [ -z "${value}" ] || [ "${value}" = "null" ]; then
        value=${default}
    fi
    echo "${value}"
}

# func_has FILE KEY: whether the file has a line for KEY.
function func_has() {
    awk -v k="${2}:" 'index($0, k) == 1 { found = 1; exit } END { exit !found }' "${1}"
}

# func_mode_value VALUE MODE: "lite_train_lite_infer=1|whole_infer=2" -> the MODE's value ("" if it has none);
# a value without mode=... parts applies to every mode.
function func_mode_value() {
    local value=$1 mode=$2 part
    if ! [[ "${value}" =~ ^(lite_train_lite_infer|lite_train_whole_infer|whole_infer|whole_train_whole_infer)= ]]; then
        echo "${value}"
        return
    fi
    local IFS='|'
    for part in ${value}; do
        if [ "${part%%=*}" = "${mode}" ]; then
            [ "${part#*=}" = "null" ] && echo "" || echo "${part#*=}"
            return
        fi
    done
    echo ""
}

# status_check STATUS COMMAND RESULTS_LOG MODEL LOG_FILE: PaddleRec's line for one step.
function status_check() {
    local last_status=$1 run_command=$2 run_log=$3 model_name=$4 log_path=${5:-}
    if [ "${last_status}" -eq 0 ]; then
        echo "Run successfully with command - ${model_name} - ${run_command} - ${log_path}" | tee -a "${run_log}"
    else
        echo "Run failed with command - ${model_name} - ${run_command} - ${log_path}" | tee -a "${run_log}"
    fi
}

# func_check_mode MODE: exit 2 with the list of modes if MODE is not one of them.
function func_check_mode() {
    local mode
    for mode in ${TIPC_MODES}; do
        [ "${mode}" = "$1" ] && return 0
    done
    echo "unknown mode '$1'; expected one of: ${TIPC_MODES}" >&2
    exit 2
}

# func_newest_epoch DIR: the largest <epoch> subfolder of DIR holding model.pt ("" if none).
function func_newest_epoch() {
    local dir=$1
    [ -d "${dir}" ] || return 0
    (cd "${dir}" && for d in *; do [[ "${d}" =~ ^[0-9]+$ ]] && [ -f "${d}/model.pt" ] && echo "${d}"; done) | sort -n | tail -1
}

# func_abspath PATH: PATH made absolute against the working directory.
function func_abspath() {
    case "$1" in
        /*) echo "$1" ;;
        *) echo "$(pwd)/$1" ;;
    esac
}
