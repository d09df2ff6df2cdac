#!/usr/bin/env bash
# Runs one r1jax command on every worker of a Cloud TPU VM slice: create, install, run, delete.
#
# Usage:
#   launch/tpu_vm.sh [--name NAME] [--zone ZONE] [--accelerator-type TYPE] [--version RUNTIME]
#                    [--project PROJECT] [--repo GIT_URL] [--ref GIT_REF] [--spot] [--keep]
#                    [--skip-create] [--dry-run] [-- COMMAND ...]
# Example (v5e, 8 chips, one host):
#   launch/tpu_vm.sh --name r1 --zone us-west4-a --accelerator-type v5litepod-8 \
#       --version v2-alpha-tpuv5-lite -- r1jax train --config=configs/grpo_tiny.py
# Example (v5p-64, 8 hosts):
#   launch/tpu_vm.sh --name r1 --zone us-east5-a --accelerator-type v5p-64 \
#       --version v2-alpha-tpuv5 -- r1jax train --config=configs/qwen2_5_7b.py \
#       --config.mesh.preset=v5p-64 --workdir=gs://BUCKET/r1
#
# Every worker runs the same command; jax.distributed.initialize() finds the other hosts by
# itself on a TPU VM (r1jax.distributed, rule "tpu"). Output of all workers streams here and is
# also kept in ~/r1jax_run.log on each worker. The slice is deleted on exit unless --keep.
# The checkpoint directory (--workdir) must be shared by all hosts (a gs:// bucket) on pods.
set -euo pipefail

name="r1jax-${USER:-user}"
zone="us-west4-a"
accelerator_type="v5litepod-8"
version="v2-alpha-tpuv5-lite"
project=""
repo="$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || echo "https://github.com/OWNER/r1jax.git")"
ref="$(git -C "$(dirname "$0")/.." rev-parse HEAD 2>/dev/null || echo main)"
spot=0
keep=0
skip_create=0
dry_run=0

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --accelerator-type) accelerator_type="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --repo) repo="$2"; shift 2 ;;
    --ref) ref="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --keep) keep=1; shift ;;
    --skip-create) skip_create=1; keep=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option $1 (command goes after --)" >&2; exit 2 ;;
  esac
done
if (($# == 0)); then
  set -- r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/r1jax_run
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
common=(--zone="$zone")
[[ -n "$project" ]] && common+=(--project="$project")

run() {  # prints the command; runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  ((dry_run)) || "$@"
}

# What every worker runs: quoted once here, executed by the remote login shell.
install_cmd="set -e; if [ ! -d r1jax ]; then git clone $(printf %q "$repo") r1jax; fi; \
cd r1jax && git fetch --all -q && git checkout -q $(printf %q "$ref") && \
python3 -m venv .venv && . .venv/bin/activate && pip install -q -U pip && \
pip install -q -e . 'jax[tpu]'"
run_cmd="set -o pipefail; cd r1jax && . .venv/bin/activate && $(printf '%q ' "$@")2>&1 | tee ~/r1jax_run.log"

((dry_run)) && echo "# plan: ${accelerator_type} slice '${name}' in ${zone}; every worker runs: $*"

if ((!skip_create)); then
  create=("${gcloud_tpu[@]}" create "$name" "${common[@]}" --accelerator-type="$accelerator_type"
    --version="$version")
  ((spot)) && create+=(--spot)
  run "${create[@]}"
fi
if ((!keep)); then
  cleanup() { run "${gcloud_tpu[@]}" delete "$name" "${common[@]}" --quiet; }
  trap cleanup EXIT
fi
run "${gcloud_tpu[@]}" ssh "$name" "${common[@]}" --worker=all --command="$install_cmd"
run "${gcloud_tpu[@]}" ssh "$name" "${common[@]}" --worker=all --command="$run_cmd"
