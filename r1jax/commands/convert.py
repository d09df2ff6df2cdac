"""``r1jax convert``: Hugging Face safetensors <-> r1jax (orbax) checkpoints.

  r1jax convert --config.convert.direction=hf-to-r1jax \\
      --config.convert.input=/models/Qwen2.5-1.5B --config.convert.output=/ckpt/qwen2.5-1.5b
  r1jax convert --config.convert.direction=r1jax-to-hf --config.convert.input=/runs/grpo \\
      --config.convert.output=/export/grpo-hf --config.convert.dtype=bfloat16
  r1jax convert --config.convert.direction=r1jax-to-peft --config.convert.input=/runs/lora \\
      --config.convert.output=/export/lora-adapter

A LoRA run (``config.lora.rank > 0``) exports to Hugging Face with its adapters merged into
the base it trained on (a QLoRA run: into the unquantized base), or to the PEFT format
(``adapter_model.safetensors`` + ``adapter_config.json``, loadable with ``peft`` on top of
that base).

Params are loaded shard by shard onto ``config.mesh`` (default: all devices as data; e.g.
``--config.mesh.fsdp=-1 --config.mesh.data=1`` to split a model too big for one device). The
Hugging Face export writes ``config.json``, safetensors shards (+ index) and copies the run's
tokenizer when there is one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax

from r1jax.checkpoint import find_tokenizer, load_params, run_lora, save_params
from r1jax.config import typed
from r1jax.config.flags import parse_config
from r1jax.model import hf
from r1jax.sharding import make_mesh

DIRECTIONS = ("hf-to-r1jax", "r1jax-to-hf", "r1jax-to-peft")


def main(argv: list[str]) -> int:
    config, _ = parse_config(argv, command="r1jax convert", default="convert", doc=__doc__)
    stage = typed(config)
    c = stage.convert
    if c.direction not in DIRECTIONS:
        raise ValueError(f"config.convert.direction={c.direction!r}; one of {DIRECTIONS}")
    if not c.input or not c.output:
        raise ValueError("r1jax convert needs --config.convert.input=DIR and .output=DIR")
    mesh = make_mesh(stage.mesh)
    overrides = {"param_dtype": c.dtype} if c.dtype else {}
    if c.direction == "hf-to-r1jax":
        if not (Path(c.input) / "config.json").exists():
            raise FileNotFoundError(f"config.convert.input={c.input}: no config.json (not HF)")
        model_config, params = load_params(c.input, mesh=mesh, format="hf", **overrides)
        out = save_params(c.output, model_config, params)
        _copy_tokenizer(c.input, c.output)
    elif c.direction == "r1jax-to-peft":
        model_config, out = export_peft(c.input, c.output, mesh)
    else:
        model_config, params = load_params(c.input, mesh=mesh, format="r1jax", **overrides)
        hf.save(c.output, model_config, params, max_shard_bytes=int(c.max_shard_gb * 2**30))
        _copy_tokenizer(c.input, c.output)
        out = Path(c.output)
    print(f"{c.direction}: {model_config.num_params / 1e6:.2f}M params -> {out}")
    return 0


# The files of a tokenizer and its chat settings, carried along in both directions.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "chat_template.jinja",
)  # fmt: skip


def _copy_tokenizer(source: str, output: str) -> None:
    """The tokenizer next to ``source``'s weights (or its run's) copied next to ``output``'s."""
    found = find_tokenizer(source)
    if found is None:
        return
    for name in TOKENIZER_FILES:
        if (found.parent / name).exists():
            shutil.copy(found.parent / name, Path(output) / name)


def export_peft(run: str, output: str, mesh):
    """A LoRA run's adapters -> the PEFT directory ``output``; (its model config, output)."""
    from r1jax.checkpoint import load_adapters, run_config
    from r1jax.model import ModelConfig, peft

    stored = run_config(run)
    lora = run_lora(stored)
    if lora is None:
        raise ValueError(f"config.convert.input={run}: not a LoRA run (its config.lora.rank is 0)")
    model_config = ModelConfig.from_mapping(stored["model"])
    adapters = load_adapters(run, model_config, lora, mesh)
    peft.save_adapters(output, model_config, jax.device_get(adapters), lora)
    return model_config, Path(output)
