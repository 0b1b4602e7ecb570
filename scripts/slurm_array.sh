#!/usr/bin/env bash
# Example Slurm job array: the ablations of chapter 9 (configs/ablations/*.yaml), one array task per
# config, each a DDP run over the GPUs of one node with `torchrun`. From the repository root:
#
#   mkdir -p runs/slurm && sbatch --array=0-3 scripts/slurm_array.sh          # paper size
#   PROFILE=book sbatch --array=0-3 scripts/slurm_array.sh                    # a quick check first
#   DRY_RUN=1 SLURM_ARRAY_TASK_ID=2 bash scripts/slurm_array.sh               # print task 2's command
#
# The partition, account, time limit and module/conda lines depend on the cluster: adapt them. Every
# task passes --resume, so a preempted or requeued task continues from its last checkpoint (exactly:
# RNG streams, data pool and optimiser state are restored); the world size must stay the same.
#SBATCH --job-name=savl-ablation
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=runs/slurm/%x-%A_%a.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PROFILE="${PROFILE:-paper}"
OUTPUT="${OUTPUT:-runs/ablations}"

shopt -s nullglob
configs=(configs/ablations/*.yaml)
task="${SLURM_ARRAY_TASK_ID:?not a Slurm array task: submit with sbatch --array=0-$((${#configs[@]} - 1))}"
if [ "$task" -ge "${#configs[@]}" ]; then
  echo "slurm_array: task $task but only ${#configs[@]} configs (--array=0-$((${#configs[@]} - 1)))" >&2
  exit 2
fi
cfg="${configs[$task]}"

# one process per GPU of this node; gloo on CPU when the node has none (a dry run on a laptop)
ngpu="${SLURM_GPUS_ON_NODE:-$( (nvidia-smi -L 2>/dev/null || true) | wc -l)}"
nproc=$((ngpu > 0 ? ngpu : 1))
device=$([ "$ngpu" -gt 0 ] && echo cuda || echo cpu)

cmd=(.venv/bin/torchrun --standalone --nproc_per_node="$nproc" -m savl.train.command "$cfg"
  --set "profile=$PROFILE" --set "device=$device" --set "output=$OUTPUT" --resume)
echo "slurm_array: task $task -> $cfg on $nproc process(es), $device"
if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$((${SLURM_CPUS_PER_TASK:-8} / nproc > 0 ? ${SLURM_CPUS_PER_TASK:-8} / nproc : 1))}"
exec "${cmd[@]}"
