#!/usr/bin/env bash
# The GPU benchmark, in one call of at most 8 minutes (from the repository root, in its virtual environment):
#
#   benchmarks/gpu_benchmark.sh                  # on a CUDA machine: writes benchmarks/results/train_step_gpu.{md,json}
#   benchmarks/gpu_benchmark.sh --smoke --out D  # tiny sizes on the CPU (how the tests run it)
#
# 1. DDP check: torchrun with one process per GPU at hand: the backend savl.train.distributed picks (NCCL on CUDA),
#    an all-reduce and two DDP steps (benchmarks/train_step.py --ddp-check).
# 2. The data loader on this host (sub-images and 2K photos, 0 / 4 / 8 workers): loader_cpu_gpu_host.{md,json}.
# 3. The paper-size joint and frozen-L1 steps at batch 32, 64x64 LR: naive reference (fp32, eager, materialised
#    attention) beside fp32 + SDPA, bf16 (materialised, SDPA, + channels_last, + torch.compile), with images/s,
#    peak memory, MFU against the GPU's bf16 peak and the projected 1.6 M-iteration schedule
#    (benchmarks/train_step.py --compare, which writes after every measurement and skips what would overrun).
# 4. The loader report again, now with the GPU step rate it has to sustain.
# Every step has its own time limit; the whole stays under --budget seconds (default 470; 1500 with --smoke).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT=benchmarks/results
SMOKE=0
BUDGET=
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; shift ;;
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --budget) BUDGET="${2:?--budget needs seconds}"; shift 2 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_benchmark: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3 || command -v python)"; fi
fi
TORCHRUN=("$PY" -m torch.distributed.run)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }

if [ "$SMOKE" = 1 ]; then
  # small, but on a shared CPU: generous limits (a loaded 2-core machine can be 10x slower than an idle one)
  BUDGET="${BUDGET:-1500}"
  DDP_LIMIT=400
  LOADER_LIMIT=400
  DEVICE=cpu
  NPROC=2
  LOADER=(--kinds sub --workers 0,1 --files 4 --batch 4 --batches 1)
  COMPARE=(--profile smoke --batch 2 --lr-patch 16 --steps 1 --warmup 1 --variants naive,bf16-sdpa --name train_step_gpu)
else
  BUDGET="${BUDGET:-470}"
  DDP_LIMIT=60
  LOADER_LIMIT=90
  DEVICE=cuda
  NPROC="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
  if [ "${NPROC:-0}" -lt 1 ]; then
    echo "gpu_benchmark: no CUDA device here (use --smoke to try the script on the CPU)" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  LOADER=(--kinds sub,2k --workers 0,4,8 --files 32 --batch 32 --batches 4)
  COMPARE=(--profile paper --batch 32 --lr-patch 64 --steps 8 --warmup 3 --allow-compile)
fi
echo "gpu_benchmark: device $DEVICE, $NPROC process(es) for the DDP check, budget ${BUDGET} s, results in $OUT"

status=0
echo "== 1. DDP check"
timeout "$DDP_LIMIT" "${TORCHRUN[@]}" --standalone --nproc_per_node="$NPROC" benchmarks/train_step.py --ddp-check \
  --device "$DEVICE" --ddp-report "$OUT/ddp_check.json" || { echo "gpu_benchmark: DDP check failed" >&2; status=1; }

echo "== 2. data loader on this host ($(left) s left)"
timeout "$LOADER_LIMIT" "$PY" benchmarks/loader.py "${LOADER[@]}" --tag _gpu_host --out "$OUT" \
  || { echo "gpu_benchmark: loader benchmark failed" >&2; status=1; }

# the step comparison keeps 30 s for the last step and the kill margin
T=$(( $(left) - 30 ))
echo "== 3. training steps ($T s)"
timeout --kill-after=10 "$T" "$PY" benchmarks/train_step.py --compare --device "$DEVICE" "${COMPARE[@]}" \
  --budget-s $((T - 20)) --compile-reserve-s 150 --ddp-report "$OUT/ddp_check.json" --out "$OUT" \
  || { echo "gpu_benchmark: the step comparison stopped early (what it measured is written)" >&2; status=1; }

echo "== 4. loader report with the GPU step rate"
"$PY" benchmarks/loader.py --render --tag _gpu_host --out "$OUT" || status=1
echo "gpu_benchmark: done in $((SECONDS - START)) s (status $status)"
ls -l "$OUT"/train_step_gpu.* "$OUT"/loader_cpu_gpu_host.* "$OUT"/ddp_check.json 2>/dev/null
exit $status
