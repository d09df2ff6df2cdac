#!/usr/bin/env bash
# Submits launch/slurm.sbatch for a multi-node GPU run: one process per node or per GPU.
#
# Usage:
#   launch/slurm.sh [--nodes N] [--gpus-per-node G] [--per-gpu] [--partition P] [--account A]
#                   [--time HH:MM:SS] [--job-name NAME] [--dry-run] -- COMMAND ...
# Examples:
#   launch/slurm.sh --nodes 2 -- r1jax train --config=configs/qwen2_5_7b.py \
#       --config.mesh.preset=2x8xH100 --workdir=/shared/runs/r1
#   launch/slurm.sh --nodes 2 --per-gpu --partition h100 -- r1jax train ...
#
# One process per node (default) sees all G GPUs of its node; --per-gpu starts G tasks per node,
# each bound to GPU SLURM_LOCALID by r1jax.distributed. Same program, same mesh either way.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
nodes=2
gpus_per_node=8
per_gpu=0
partition=""
account=""
time_limit="24:00:00"
job_name="r1jax"
dry_run=0

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --gpus-per-node) gpus_per_node="$2"; shift 2 ;;
    --per-gpu) per_gpu=1; shift ;;
    --partition) partition="$2"; shift 2 ;;
    --account) account="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --job-name) job_name="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "slurm.sh: unknown option $1 (command goes after --)" >&2; exit 2 ;;
  esac
done
if (($# == 0)); then
  echo "slurm.sh: no command given (put it after --)" >&2
  exit 2
fi

tasks_per_node=1
((per_gpu)) && tasks_per_node="$gpus_per_node"
submit=(sbatch --job-name="$job_name" --nodes="$nodes" --ntasks-per-node="$tasks_per_node"
  --gpus-per-node="$gpus_per_node" --time="$time_limit")
[[ -n "$partition" ]] && submit+=(--partition="$partition")
[[ -n "$account" ]] && submit+=(--account="$account")
submit+=("$here/slurm.sbatch" "$@")

printf '+'; printf ' %q' "${submit[@]}"; printf '\n'
if ((dry_run)); then
  echo "# plan: $((nodes * tasks_per_node)) processes on ${nodes} nodes x ${gpus_per_node} GPUs;" \
    "each runs:"
  SLURM_NTASKS=$((nodes * tasks_per_node)) SLURM_JOB_NUM_NODES="$nodes" \
    bash "$here/slurm.sbatch" --dry-run "$@"
  exit 0
fi
"${submit[@]}"
