#!/usr/bin/env bash
# Time-boxed paper-scale reproductions on one GPU (interlocking Fig. 4 left and Table 1).
#
#   bash experiments/gpu_reproduce.sh DATA_DIR [ROOT] [BUDGET_S]
#
# DATA_DIR holds cifar-10-batches-bin/ (batch 1 and the test batch are enough: every run
# uses the first 10,000 training images). Both tables train at once, several runs per table
# at a time on the one GPU; after BUDGET_S seconds the training stops and the reports are
# written from the runs that finished. The settings below depart from the paper's only in
# the number of epochs and training images, and the reports say so.
set -uo pipefail
DATA=${1:?usage: gpu_reproduce.sh DATA_DIR [ROOT] [BUDGET_S]}
ROOT=${2:-runs/reproduce}
BUDGET=${3:-420}
export INTERLOCK_DATA=$DATA PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
FIG4=(interlocking-fig4-left --scale paper --seeds 0 --device cuda --root "$ROOT" --set epochs=40 --set data.train_limit=10000)
TAB1=(interlocking-table1 --scale paper --seeds 0 --device cuda --root "$ROOT" --set epochs=60 --set data.train_limit=10000)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# A short smoke run first: a broken CUDA path should cost seconds, not the budget.
$PY -m interlock train --steps 3 --run-dir "$ROOT/smoke" --quiet model.name=toy_cnn model.components=3 device=cuda || exit 1
# Each reproduce in a process group of its own (setsid), so that what is still running when the
# budget runs out (its runs included) is stopped by group, and no other interlock run of this user is touched.
setsid timeout "$BUDGET" $PY -m interlock reproduce "${FIG4[@]}" --jobs 10 --quiet &
G1=$!
setsid timeout "$BUDGET" $PY -m interlock reproduce "${TAB1[@]}" --jobs 4 --quiet &
G2=$!
wait
for g in $G1 $G2; do kill -TERM -- "-$g" 2>/dev/null || true; done  # runs still going when the budget ran out
sleep 2
$PY -m interlock reproduce "${FIG4[@]}" --report-only
$PY -m interlock reproduce "${TAB1[@]}" --report-only
$PY -m interlock reproduce interlocking-table2 --scale paper --seeds 0 --device cuda --root "$ROOT" --set epochs=60 --set data.train_limit=10000 --report-only
