"""LoRA adapters <-> Hugging Face PEFT (``adapter_model.safetensors`` + ``adapter_config.json``).

PEFT stores, per adapted ``nn.Linear`` (``W [out, in]``), ``lora_A.weight [r, in]`` and
``lora_B.weight [out, r]`` under ``base_model.model.<module>``; the layer computes
``W + (lora_alpha / r) * B @ A``. Ours (``r1jax.model.lora``) is ``a [in..., r]``,
``b [r, out...]`` per layer, so ``A = a.reshape(in, r).T`` and ``B = b.reshape(r, out).T``
(the flattening the weights themselves use, ``r1jax.model.hf``). Grouped-query attention
models (Llama, Qwen2, Qwen3) and their MLPs; adapters on multi-head latent attention, or on
a mixture of experts' MLPs (PEFT maps ``gate_proj``/``up_proj``/``down_proj`` onto the fused
experts, not a dense first layer's MLP: the adapters would load and do nothing), are refused,
as are PEFT adapters whose settings this format does not carry (per-module ranks or alphas,
biases, a subset of layers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from r1jax.config.model import ModelConfig
from r1jax.model import hf
from r1jax.model.lora import LoRAConfig, adapter_specs

_MODULES = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
    "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}  # fmt: skip


def _check(config: ModelConfig, lora: LoRAConfig):
    unsupported = set(lora.targets) - set(_MODULES)
    mlp = sorted(set(lora.targets) & {"gate", "up", "down"})
    if config.mla is not None or unsupported or (config.moe is not None and mlp):
        raise ValueError(
            f"PEFT adapters: targets among {sorted(_MODULES)} of a grouped-query attention "
            f"model, not the MLP of a mixture of experts (got {list(lora.targets)}, "
            f"mla={config.mla is not None}, moe={config.moe is not None})"
        )


# adapter_config.json settings a plain LoRA leaves at these values; others change the adapters.
_PLAIN = {"use_rslora": False, "use_dora": False, "bias": "none", "alpha_pattern": {},
          "rank_pattern": {}, "layers_to_transform": None, "lora_bias": False,
          "fan_in_fan_out": False}  # fmt: skip


def _keys(config: ModelConfig, lora: LoRAConfig):
    """(stack, target, layer index in the stack, PEFT module name) of every adapter."""
    for stack, layer_ids, _ in hf._stacks(config):
        for name in adapter_specs(config, lora).get(stack, {}):
            for j, i in enumerate(layer_ids):
                yield stack, name, j, f"base_model.model.model.layers.{i}.{_MODULES[name]}"


def save_adapters(path: str | os.PathLike, config: ModelConfig, adapters: dict, lora: LoRAConfig):
    """Writes ``adapters`` in the PEFT format to the directory ``path``."""
    _check(config, lora)
    tensors = {}
    for stack, name, j, module in _keys(config, lora):
        a, b = (np.asarray(adapters[stack][name][k][j], np.float32) for k in ("a", "b"))
        tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, lora.rank).T)
        tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(b.reshape(lora.rank, -1).T)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    modules = sorted(_MODULES[t].split(".")[1] for t in lora.targets)
    config_json = dict(
        peft_type="LORA", task_type="CAUSAL_LM", r=lora.rank, lora_alpha=lora.alpha,
        lora_dropout=lora.dropout, target_modules=modules,
        bias="none", fan_in_fan_out=False, base_model_name_or_path=None,
        inference_mode=True, use_rslora=False, init_lora_weights=True,
    )  # fmt: skip
    (path / "adapter_config.json").write_text(json.dumps(config_json, indent=2))


def load_adapters(path: str | os.PathLike, config: ModelConfig) -> tuple[dict, LoRAConfig]:
    """A PEFT adapter directory -> ``(adapters, LoRAConfig)`` for ``config``'s model."""
    path = Path(path)
    meta = json.loads((path / "adapter_config.json").read_text())
    other = {k: meta[k] for k, plain in _PLAIN.items() if meta.get(k, plain) not in (plain, None)}
    if meta.get("peft_type") != "LORA" or other:
        raise ValueError(
            f"{path}/adapter_config.json: only plain LoRA adapters are supported (got "
            f"peft_type={meta.get('peft_type')!r}, {other})"
        )
    by_module = {m.split(".")[1]: t for t, m in _MODULES.items()}
    targets = meta["target_modules"]
    targets = [targets] if isinstance(targets, str) else targets
    unknown = [t for t in targets if t not in by_module]
    if unknown:
        raise ValueError(f"{path}/adapter_config.json: target_modules {unknown} unsupported")
    lora = LoRAConfig(
        rank=int(meta["r"]), alpha=float(meta["lora_alpha"]),
        dropout=float(meta.get("lora_dropout", 0.0)),
        targets=tuple(t for t in _MODULES if _MODULES[t].split(".")[1] in targets),
    )  # fmt: skip
    _check(config, lora)
    tensors = load_file(str(path / "adapter_model.safetensors"))
    specs = adapter_specs(config, lora)
    stacked: dict = {}
    for stack, name, _, module in _keys(config, lora):
        spec = specs[stack][name]
        for k, key in (("a", "lora_A"), ("b", "lora_B")):
            full = f"{module}.{key}.weight"
            if full not in tensors:  # PEFT names its default adapter in some versions
                full = f"{module}.{key}.default.weight"
            t = tensors[full].astype(np.float32).T  # A^T [in, r], B^T [r, out]
            stacked.setdefault(stack, {}).setdefault(name, {}).setdefault(k, []).append(
                t.reshape(spec[k].shape[1:])
            )
    adapters = {
        s: {n: {k: np.stack(v) for k, v in ab.items()} for n, ab in t.items()}
        for s, t in stacked.items()
    }
    return adapters, lora
