#!/usr/bin/env bash
# The train -> (evaluate) -> export -> inference chain of one model (PaddleRec's test_tipc entry point):
#
#   bash test_tipc/prepare.sh                  test_tipc/configs/<model>/train_infer_python.txt <mode>
#   bash test_tipc/test_train_inference_python.sh test_tipc/configs/<model>/train_infer_python.txt <mode>
#
# modes: lite_train_lite_infer, lite_train_whole_infer, whole_infer, whole_train_whole_infer
# (test_tipc/README.md). The config is read by key (test_tipc/common_func.sh), not by line
# position. Each step appends "Run successfully with command - ..." or "Run failed with command - ..."
# to $TIPC_WORK/output/<model>/<mode>/results.log (TIPC_WORK defaults to test_tipc); the step's own
# output goes to a .log file beside it. The script sets runner.model_save_path, model_init_path,
# train_data_dir and test_data_dir itself. Exit status: 0 when every step succeeded, 1 otherwise.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source test_tipc/common_func.sh

if [ $# -lt 2 ]; then
    echo "usage: bash test_tipc/test_train_inference_python.sh test_tipc/configs/<model>/train_infer_python.txt <mode>" >&2
    exit 2
fi
FILENAME=$1
MODE=$2
func_check_mode "${MODE}"
[ -f "${FILENAME}" ] || { echo "config '${FILENAME}' does not exist" >&2; exit 2; }
for key in model_name config norm_train norm_export inference; do
    func_has "${FILENAME}" "${key}" || { echo "${FILENAME}: missing key '${key}'" >&2; exit 2; }
done

# ------------------------------------------------------------------ train params
model_name=$(func_get "${FILENAME}" model_name)
python=${PYTHON:-$(func_get "${FILENAME}" python python)}
gpu_list=$(func_get "${FILENAME}" gpu_list -1)
train_use_gpu_key=runner.use_gpu
train_use_gpu_values=$(func_get "${FILENAME}" runner.use_gpu False)
config=$(func_mode_value "$(func_get "${FILENAME}" config)" "${MODE}")
epochs=$(func_mode_value "$(func_get "${FILENAME}" runner.epochs)" "${MODE}")
train_batch=$(func_mode_value "$(func_get "${FILENAME}" runner.train_batch_size)" "${MODE}")
train_model_name=$(func_mode_value "$(func_get "${FILENAME}" train_model_name latest)" "${MODE}")
norm_train=$(func_get "${FILENAME}" norm_train)
eval_py=$(func_get "${FILENAME}" eval)
# ------------------------------------------------------------------ export and inference params
norm_export=$(func_get "${FILENAME}" norm_export)
inference_py=$(func_get "${FILENAME}" inference)
use_gpu_list=$(func_get "${FILENAME}" --use_gpu False)
use_mkldnn_list=$(func_get "${FILENAME}" --enable_mkldnn False)
cpu_threads_list=$(func_get "${FILENAME}" --cpu_threads 1)
batch_size_list=$(func_get "${FILENAME}" --batchsize 64)
use_trt_list=$(func_get "${FILENAME}" --enable_tensorRT False)
precision_list=$(func_get "${FILENAME}" --precision fp32)
backend_list=$(func_get "${FILENAME}" --backend onnxruntime)
benchmark_value=$(func_get "${FILENAME}" --benchmark True)

[ -n "${config}" ] || { echo "${FILENAME}: key 'config' has no value for ${MODE}" >&2; exit 2; }
WORK=${TIPC_WORK:-test_tipc}
DATA=$(func_abspath "${WORK}/data/${model_name}")
LOG_PATH=$(func_abspath "${WORK}/output/${model_name}/${MODE}")
infer_data=$(func_get "${FILENAME}" --data_dir "${DATA}/infer")
save_log_path=$(func_get "${FILENAME}" --save_log_path "${LOG_PATH}")
mkdir -p "${LOG_PATH}"
status_log="${LOG_PATH}/results.log"
if [ ! -d "${DATA}/infer" ]; then
    echo "no data in ${DATA}: run bash test_tipc/prepare.sh ${FILENAME} ${MODE} first" >&2
    exit 2
fi
failures=0

# run_step NAME COMMAND LOG: run, record the outcome, count failures; returns the command's status
function run_step() {
    local cmd=$2 log=$3
    eval "${cmd} > \"${log}\" 2>&1"
    local status=$?
    status_check "${status}" "${cmd}" "${status_log}" "${model_name}" "${log}"
    [ "${status}" -eq 0 ] || failures=$((failures + 1))
    return "${status}"
}

# func_inference MODEL_DIR: the inference sweep the config lists
function func_inference() {
    local model_dir=$1 use_gpu use_mkldnn threads batch_size precision backend use_trt log cmd
    local IFS='|'
    for use_gpu in ${use_gpu_list}; do
      for backend in ${backend_list}; do
        if [ "${use_gpu}" = "False" ] || [ "${use_gpu}" = "cpu" ]; then
            for use_mkldnn in ${use_mkldnn_list}; do
              for threads in ${cpu_threads_list}; do
                for batch_size in ${batch_size_list}; do
                  for precision in ${precision_list}; do
                    if [ "${precision}" = "fp16" ]; then
                        continue  # fp16 runs on GPUs only
                    fi
                    log="${LOG_PATH}/python_infer_cpu_usemkldnn_${use_mkldnn}_threads_${threads}_precision_${precision}_batchsize_${batch_size}_backend_${backend}.log"
                    cmd="${python} ${inference_py} --use_gpu=False --enable_mkldnn=${use_mkldnn} --cpu_threads=${threads} --model_dir=${model_dir} --batchsize=${batch_size} --data_dir=${infer_data} --benchmark=${benchmark_value} --precision=${precision} --backend=${backend} --save_log_path=${save_log_path}"
                    run_step infer "${cmd}" "${log}"
                  done
                done
              done
            done
        elif [ "${use_gpu}" = "True" ] || [ "${use_gpu}" = "gpu" ]; then
            for use_trt in ${use_trt_list}; do
              for precision in ${precision_list}; do
                if [ "${precision}" = "int8" ]; then
                    continue  # int8 is onnxruntime's CPU dynamic quantization
                fi
                if [ "${precision}" = "fp16" ] && [ "${use_trt}" = "False" ]; then
                    continue  # fp16 is TensorRT's mode
                fi
                for batch_size in ${batch_size_list}; do
                    log="${LOG_PATH}/python_infer_gpu_usetrt_${use_trt}_precision_${precision}_batchsize_${batch_size}_backend_${backend}.log"
                    cmd="${python} ${inference_py} --use_gpu=True --enable_tensorRT=${use_trt} --model_dir=${model_dir} --batchsize=${batch_size} --data_dir=${infer_data} --benchmark=${benchmark_value} --precision=${precision} --backend=${backend} --save_log_path=${save_log_path}"
                    run_step infer "${cmd}" "${log}"
                done
              done
            done
        else
            echo "--use_gpu value '${use_gpu}' is neither True nor False" >&2
            failures=$((failures + 1))
        fi
      done
    done
}

# func_export_infer CHECKPOINT OUT_DIR TAG: evaluate (when configured), export, then the inference sweep
function func_export_infer() {
    local checkpoint=$1 out_dir=$2 tag=$3 epoch
    epoch=$(basename "${checkpoint}")
    if [ -n "${eval_py}" ]; then
        run_step eval "${python} ${eval_py} -m ${config} -o runner.infer_load_path=$(dirname "${checkpoint}") runner.infer_start_epoch=${epoch} runner.infer_end_epoch=$((epoch + 1)) runner.test_data_dir=${infer_data}" \
            "${LOG_PATH}/eval_${tag}.log"
    fi
    if run_step export "${python} ${norm_export} -m ${config} -o runner.model_init_path=${checkpoint} runner.model_save_path=${out_dir} runner.test_data_dir=${infer_data}" \
            "${LOG_PATH}/export_${tag}.log"; then
        func_inference "${out_dir}"
    fi
}

if [ "${MODE}" = "whole_infer" ]; then
    pretrained=$(func_mode_value "$(func_get "${FILENAME}" infer_model)" "${MODE}")
    pretrained=$(func_abspath "${pretrained:-${DATA}/pretrained}")
    epoch=$(func_newest_epoch "${pretrained}")
    if [ -z "${epoch}" ]; then
        echo "no checkpoint in ${pretrained}: run bash test_tipc/prepare.sh ${FILENAME} ${MODE} first" >&2
        exit 2
    fi
    func_export_infer "${pretrained}/${epoch}" "${LOG_PATH}/whole_infer_model" whole_infer
else
    IFS='|' read -r -a gpus <<< "${gpu_list}"
    IFS='|' read -r -a train_use_gpus <<< "${train_use_gpu_values}"
    for i in "${!gpus[@]}"; do
        gpu=${gpus[$i]}
        train_use_gpu=${train_use_gpus[$i]:-False}
        env_prefix=""
        [ "${gpu}" = "-1" ] || env_prefix="CUDA_VISIBLE_DEVICES=${gpu} "
        save_dir="${LOG_PATH}/norm_train_gpus_${gpu}"
        cmd="${env_prefix}${python} ${norm_train} -m ${config} -o ${train_use_gpu_key}=${train_use_gpu}${epochs:+ runner.epochs=${epochs}}${train_batch:+ runner.train_batch_size=${train_batch}} runner.model_save_path=${save_dir} runner.train_data_dir=${DATA}/train runner.test_data_dir=${infer_data}"
        run_step train "${cmd}" "${LOG_PATH}/norm_train_gpus_${gpu}.log" || continue
        if [ "${train_model_name}" = "latest" ]; then
            epoch=$(func_newest_epoch "${save_dir}")
        else
            epoch=${train_model_name}
        fi
        func_export_infer "${save_dir}/${epoch}" "${save_dir}" "gpus_${gpu}"
    done
fi

echo "${model_name} ${MODE}: $(grep -c '^Run successfully' "${status_log}") step(s) succeeded, ${failures} failed; see ${status_log}"
[ "${failures}" -eq 0 ]
