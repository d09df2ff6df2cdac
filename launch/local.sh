#!/usr/bin/env bash
# Runs N JAX processes on this machine, each with K fake CPU devices, as one distributed job.
#
# The processes find each other through an explicit coordinator on 127.0.0.1 (a free port) and
# use the gloo CPU collectives (r1jax.distributed.initialize reads R1JAX_COORDINATOR,
# R1JAX_NUM_PROCESSES, R1JAX_PROCESS_ID). This is the multi-host code path that CI exercises.
#
# Usage:
#   launch/local.sh [-n NUM_PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] [-l LOG_DIR]
#                   [--dry-run] -- COMMAND [ARGS...]
# Example:
#   launch/local.sh -n 2 -d 4 -- r1jax train --config=configs/sft_tiny.py
#   launch/local.sh -n 2 -d 4 -- python tests/scaleout/driver.py --out /tmp/mp
#
# Output lines are prefixed with [pI]; with -l each process also writes LOG_DIR/process_I.log.
# If any process fails, the others are stopped and the script exits with the first failure.
set -euo pipefail

num_processes=2
devices=4
port=""
log_dir=""
dry_run=0

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    -n | --num-processes) num_processes="$2"; shift 2 ;;
    -d | --devices) devices="$2"; shift 2 ;;
    -p | --port) port="$2"; shift 2 ;;
    -l | --log-dir) log_dir="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option $1 (command goes after --)" >&2; usage >&2; exit 2 ;;
  esac
done
if (($# == 0)); then
  echo "local.sh: no command given (put it after --)" >&2
  exit 2
fi
if ! [[ "$num_processes" =~ ^[1-9][0-9]*$ && "$devices" =~ ^[1-9][0-9]*$ ]]; then
  echo "local.sh: -n and -d take positive integers" >&2
  exit 2
fi

if [[ -z "$port" ]]; then  # ask the kernel for a free port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
coordinator="127.0.0.1:${port}"

env_for() {
  printf '%s ' "JAX_PLATFORMS=cpu" \
    "XLA_FLAGS=--xla_force_host_platform_device_count=${devices}" \
    "R1JAX_COORDINATOR=${coordinator}" "R1JAX_NUM_PROCESSES=${num_processes}" \
    "R1JAX_PROCESS_ID=$1"
}

if ((dry_run)); then
  echo "# plan: ${num_processes} processes x ${devices} CPU devices, coordinator ${coordinator}"
  for ((i = 0; i < num_processes; i++)); do
    echo "env $(env_for "$i")$(printf '%q ' "$@")&"
  done
  echo "wait"
  exit 0
fi

[[ -n "$log_dir" ]] && mkdir -p "$log_dir"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'cleanup; exit 130' INT TERM

prefix() {  # prefix <index>: tags each line with the process index (and logs it with -l)
  if [[ -n "$log_dir" ]]; then
    tee "${log_dir}/process_$1.log" | sed -u "s/^/[p$1] /"
  else
    sed -u "s/^/[p$1] /"
  fi
}

for ((i = 0; i < num_processes; i++)); do
  # shellcheck disable=SC2046  # env_for prints NAME=value words without spaces inside
  env $(env_for "$i") "$@" > >(prefix "$i") 2>&1 &
  pids+=("$!")
done

status=0
remaining=("${pids[@]}")
while ((${#remaining[@]})); do
  if wait -n "${remaining[@]}"; then rc=0; else rc=$?; fi
  still=()
  for pid in "${remaining[@]}"; do
    kill -0 "$pid" 2>/dev/null && still+=("$pid")
  done
  remaining=("${still[@]+"${still[@]}"}")
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "local.sh: a process exited with status ${rc}; stopping the others" >&2
    cleanup
  fi
done
exit "$status"
