#!/usr/bin/env bash
# Decode on one GPU at the Qwen2.5-1.5B shape (random weights), batch 256 (32 prompts x G=8):
# tokens/s and HBM bandwidth used against the roofline (the data sheet's peak and a device copy
# timed in the same process), transformers.generate on the same GPU, shapes and weights; then
# the static loop, continuous batching and the paged cache (Pallas kernel, then the gather) on
# long-tailed rows at that shape. Each part writes one JSON line to ${OUT:-.}; run from the
# repository root (EXPERIMENTS=1 adds the runs at the end, MAIN=0 leaves out the first three):
#   OUT=/tmp/gpu bash benchmarks/gpu_decode.sh [peak GB/s, default 4800 (H200)]
set -uo pipefail
out=${OUT:-.}
peak=${1:-4800}
shape=(--hidden 1536 --layers 28 --heads 12 --kv-heads 2 --mlp 8960 --vocab 151936
  --prompts 32 --samples 8 --prompt-len 256 --dtype bfloat16)
export PYTHONUNBUFFERED=1 R1JAX_HOST_MALLOC=0
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}  # torch's share too
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)"
if [[ ${MAIN:-1} == 1 ]]; then
  timeout 330 python3 benchmarks/sampler.py "${shape[@]}" --new-tokens 1024 --repeats 2 \
    --peak-bw-gbs "$peak" --measure-bw --compare-hf --json | tee "$out/decode_1p5b.json"
  timeout 240 python3 benchmarks/sampler.py "${shape[@]}" --long-tail --slots 64 \
    --new-tokens 1024 --median-tokens 64 --page-size 64 --json | tee "$out/long_tail_1p5b.json"
  # The paged cache's decode attention by its plain-JAX gather, against the Pallas kernel above.
  timeout 240 python3 benchmarks/sampler.py "${shape[@]}" --long-tail --slots 64 \
    --new-tokens 1024 --median-tokens 64 --page-size 64 --paged-attention gather --json \
    | tee "$out/long_tail_1p5b_gather.json"
fi
# EXPERIMENTS=1: the rows of docs/sampler.md's "Stopping the copies", in its order. The sampler
# compiles its programs with compile_options.GPU_DECODE_OPTIONS, which take precedence over XLA_FLAGS:
# --gpu-options replaces them ('{}': none) so that the flags below are what a row measures.
if [[ ${EXPERIMENTS:-0} == 1 ]]; then
  one=(--new-tokens 1024 --repeats 1 --peak-bw-gbs "$peak" --json)
  dsf="--xla_gpu_enable_dynamic_slice_fusion=true"
  no_triton='{"xla_gpu_enable_triton_gemm": false}'
  row() { # name, XLA_FLAGS, then sampler.py arguments
    local name=$1 flags=$2; shift 2
    XLA_FLAGS="$flags" timeout 150 python3 benchmarks/sampler.py "${shape[@]}" "${one[@]}" "$@" \
      | tee "$out/decode_$name.json"
  }
  row none "" --gpu-options '{}'
  row dsf "$dsf" --gpu-options '{}'
  row cublas "" --gpu-options "$no_triton"
  row cublas_dsf "$dsf" --gpu-options "$no_triton"
  row default ""
  row default_1window "" --decode-windows 1
  row default_dsf_1window "$dsf" --decode-windows 1
  row unrolled_1window "" --gpu-options '{}' --scan-unroll 28 --decode-windows 1
fi
