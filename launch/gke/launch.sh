#!/usr/bin/env bash
# Runs one r1jax command on a GKE cluster: as a JobSet of GPU nodes, or through XPK (TPU or GPU).
#
# Usage:
#   launch/gke/launch.sh [--mode jobset|xpk] [--name NAME] [--image IMAGE] [--num-nodes N]
#       [--gpus-per-node G] [--gpu-type GKE_ACCELERATOR] [--port PORT] [--max-restarts K]
#       [--cluster CLUSTER] [--tpu-type TYPE | --device-type TYPE] [--num-slices S]
#       [--project P] [--zone Z] [--manifest FILE] [--no-follow] [--delete]
#       [--dry-run] -- COMMAND ...
# Examples:
#   # 2 nodes x 8 H100 as a JobSet (one process per node), logs followed, deleted at the end
#   launch/gke/launch.sh --name r1-grpo --image REGISTRY/r1jax:latest --num-nodes 2 --delete \
#       -- r1jax train --config=configs/qwen2_5_7b.py --config.mesh.data=2 --config.mesh.fsdp=8
#   # a v5p-64 TPU slice through XPK (jax finds the TPU hosts itself)
#   launch/gke/launch.sh --mode xpk --cluster my-cluster --tpu-type v5p-64 --name r1-tpu \
#       --image REGISTRY/r1jax:latest -- r1jax train --config=configs/qwen2_5_7b.py
#
# jobset: renders launch/gke/jobset.yaml (to --manifest, default a temp file), kubectl-applies
# it, waits for the pods and follows their logs (prefixed by pod). The image must have r1jax
# installed (pip install -e . 'jax[cuda12]' for GPU, 'jax[tpu]' for TPU).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
mode="jobset"
name="r1jax-${USER:-user}"
image="us-docker.pkg.dev/PROJECT/r1jax/r1jax:latest"
num_nodes=2
gpus_per_node=8
gpu_type="nvidia-h100-80gb"
port=8476
max_restarts=0
cluster=""
tpu_type=""
device_type="h100-80gb-8"
num_slices=1
project=""
zone=""
manifest=""
follow=1
delete=0
dry_run=0

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --mode) mode="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    --num-nodes) num_nodes="$2"; shift 2 ;;
    --gpus-per-node) gpus_per_node="$2"; shift 2 ;;
    --gpu-type) gpu_type="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --max-restarts) max_restarts="$2"; shift 2 ;;
    --cluster) cluster="$2"; shift 2 ;;
    --tpu-type) tpu_type="$2"; shift 2 ;;
    --device-type) device_type="$2"; shift 2 ;;
    --num-slices) num_slices="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --manifest) manifest="$2"; shift 2 ;;
    --no-follow) follow=0; shift ;;
    --delete) delete=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "launch.sh: unknown option $1 (command goes after --)" >&2; exit 2 ;;
  esac
done
if (($# == 0)); then
  echo "launch.sh: no command given (put it after --)" >&2
  exit 2
fi
command_str="$(printf '%q ' "$@")"

run() {  # prints the command; runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  ((dry_run)) || "$@"
}

render() {  # the JobSet manifest on stdout
  local cmd_json
  cmd_json="$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$command_str")"
  sed -e "s|{{NAME}}|${name}|g" -e "s|{{IMAGE}}|${image}|g" \
    -e "s|{{NUM_NODES}}|${num_nodes}|g" -e "s|{{GPUS_PER_NODE}}|${gpus_per_node}|g" \
    -e "s|{{GPU_TYPE}}|${gpu_type}|g" -e "s|{{PORT}}|${port}|g" \
    -e "s|{{MAX_RESTARTS}}|${max_restarts}|g" "$here/jobset.yaml" |
    CMD="$cmd_json" python3 -c 'import os, sys; sys.stdout.write(sys.stdin.read().replace("{{COMMAND}}", os.environ["CMD"]))'
}

if [[ "$mode" == "jobset" ]]; then
  selector="jobset.sigs.k8s.io/jobset-name=${name}"
  if ((dry_run)); then
    echo "# plan: JobSet ${name}: ${num_nodes} nodes x ${gpus_per_node} ${gpu_type}; manifest:"
    render | sed 's/^/#   /'
    manifest="${manifest:-/tmp/${name}.jobset.yaml}"
  else
    manifest="${manifest:-$(mktemp --suffix=.jobset.yaml)}"
    render >"$manifest"
  fi
  run kubectl apply -f "$manifest"
  if ((follow)); then
    run kubectl wait --for=condition=Ready pod -l "$selector" --timeout=1800s
    run kubectl logs -f -l "$selector" --prefix --max-log-requests="$num_nodes" --tail=-1
  fi
  if ((delete)); then
    run kubectl delete jobset "$name"
  fi
elif [[ "$mode" == "xpk" ]]; then
  if [[ -z "$cluster" ]]; then
    echo "launch.sh: --mode xpk needs --cluster" >&2
    exit 2
  fi
  xpk=(xpk workload create --cluster="$cluster" --workload="$name" --docker-image="$image"
    --num-slices="$num_slices" --command="$command_str")
  if [[ -n "$tpu_type" ]]; then
    xpk+=(--tpu-type="$tpu_type")
  else  # XPK GPU workloads set JAX_COORDINATOR_ADDRESS, NNODES, NODE_RANK (rule "xpk")
    xpk+=(--device-type="$device_type" --num-nodes="$num_nodes")
  fi
  [[ -n "$project" ]] && xpk+=(--project="$project")
  [[ -n "$zone" ]] && xpk+=(--zone="$zone")
  ((dry_run)) && echo "# plan: XPK workload ${name} on cluster ${cluster}"
  run "${xpk[@]}"
  if ((follow)); then
    run kubectl wait --for=condition=Ready pod -l "jobset.sigs.k8s.io/jobset-name=${name}" \
      --timeout=1800s
    run kubectl logs -f -l "jobset.sigs.k8s.io/jobset-name=${name}" --prefix --tail=-1 \
      --max-log-requests=64
  fi
  if ((delete)); then
    run xpk workload delete --cluster="$cluster" --workload="$name"
  fi
else
  echo "launch.sh: --mode is jobset or xpk, got ${mode}" >&2
  exit 2
fi
