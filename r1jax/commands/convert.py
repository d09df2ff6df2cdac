"""``r1jax convert``: Hugging Face safetensors <-> r1jax (orbax) checkpoints.

  r1jax convert hf-to-r1jax --input /models/Qwen2.5-1.5B --output /ckpt/qwen2.5-1.5b
  r1jax convert r1jax-to-hf --input /runs/grpo --output /export/grpo-hf --dtype bfloat16

``--mesh d,f,t`` loads shard by shard onto a mesh of that shape (default: one device). The
Hugging Face export writes ``config.json``, safetensors shards (+ index) and copies the run's
tokenizer when there is one.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from r1jax.checkpoint import find_tokenizer, load_params, save_params
from r1jax.model import hf
from r1jax.sharding import MeshConfig, make_mesh


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="r1jax convert", description=__doc__.split("\n\n")[0])
    p.add_argument("direction", choices=["hf-to-r1jax", "r1jax-to-hf"])
    p.add_argument("--input", required=True, help="checkpoint directory to read")
    p.add_argument("--output", required=True, help="directory to write")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="param dtype of the written checkpoint (default: keep)",
    )
    p.add_argument("--mesh", default=None, help="data,fsdp,tensor sizes, e.g. 1,-1,1")
    p.add_argument("--max-shard-gb", type=float, default=4.0, help="HF safetensors shard size")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    mesh = None
    if args.mesh:
        mesh = make_mesh(MeshConfig(*(int(x) for x in args.mesh.split(","))))
    overrides = {"param_dtype": args.dtype} if args.dtype else {}
    if args.direction == "hf-to-r1jax":
        if not (Path(args.input) / "config.json").exists():
            raise FileNotFoundError(f"--input {args.input}: no config.json (not a HF checkpoint)")
        config, params = load_params(args.input, mesh=mesh, format="hf", **overrides)
        out = save_params(args.output, config, params)
        tokenizer = find_tokenizer(args.input)
        if tokenizer is not None:  # keep the tokenizer next to the converted weights
            for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
                if (Path(args.input) / name).exists():
                    shutil.copy(Path(args.input) / name, Path(args.output) / name)
    else:
        config, params = load_params(args.input, mesh=mesh, format="r1jax", **overrides)
        hf.save(args.output, config, params, max_shard_bytes=int(args.max_shard_gb * 2**30))
        tokenizer = find_tokenizer(args.input)
        if tokenizer is not None:
            shutil.copy(tokenizer, Path(args.output) / tokenizer.name)
        out = Path(args.output)
    print(f"{args.direction}: {config.num_params / 1e6:.2f}M params -> {out}")
    return 0
