#!/usr/bin/env bash
# The engine's GPU checks (issue 10) in one go, for a machine with one or more GPUs.
#
#   bash experiments/gpu_engine_checks.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds cifar-10-batches-bin/ (batch 1 and the test batch are enough) and text/
# (tiny shakespeare). Writes to OUT_DIR (default runs/gpu_checks): the CUDA tests' report
# (the simulated engine on CUDA against the CPU, CUDA-event timing, ranks sharing one GPU over
# gloo, NCCL with two GPUs or more), and the clock's K-GPU step-time predictions for ResNet-32
# and the GPT decoder, per strategy and against PyTorch's pipeline schedules, with the papers'
# heads and with linear heads (JSON lines, tables on stderr). Not yet run on a GPU.
set -uo pipefail
DATA=${1:?usage: gpu_engine_checks.sh DATA_DIR [OUT_DIR]}
OUT=${2:-runs/gpu_checks}
mkdir -p "$OUT"
export INTERLOCK_DATA=$DATA PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -m pytest -v -rs tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.txt"
$PY benchmarks/predicted_steps.py --device cuda > "$OUT/predicted_steps.jsonl" 2> "$OUT/predicted_steps.txt"
$PY benchmarks/predicted_steps.py --device cuda --heads linear > "$OUT/predicted_steps_linear.jsonl" \
    2> "$OUT/predicted_steps_linear.txt"
tail -n 30 "$OUT/predicted_steps.txt" "$OUT/predicted_steps_linear.txt"
