"""Hugging Face checkpoints (``config.json`` + ``*.safetensors``) <-> r1jax (config, params).

Supported families (``r1jax.model.hf_config``): Qwen2 / Qwen2.5 (QKV bias), Llama 3.x (llama3
RoPE scaling), Qwen3 (QK norm) and Qwen3-MoE (experts stored one tensor per expert, as the
published checkpoints are); the DeepSeek-R1-Distill models are Qwen2 or Llama.

Loading is lazy and sharded: each device shard is read from the memory-mapped safetensors by
``jax.make_array_from_callback``, so a parameter is never materialised whole on the host (only
the layers a shard covers are read).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from r1jax import multihost
from r1jax.config.model import ModelConfig
from r1jax.model.hf_config import config_from_hf, config_to_hf
from r1jax.model.params import abstract_params, param_shardings

__all__ = ["config_from_hf", "config_to_hf", "load", "save"]


# ----------------------------------------------------------------------------- name mapping


def _rope_last(start: int, width: int, interleave: bool) -> tuple[Callable, Callable]:
    """(HF -> ours, ours -> HF) of the last dim's RoPE part ``[start:]``: DeepSeek's published
    layout rotates interleaved pairs (``rope_interleave``), ours the two halves (``layers``),
    so the pairs' even and odd members are gathered into the halves (and back)."""
    perm = np.concatenate([np.arange(0, width, 2), np.arange(1, width, 2)])
    if not interleave:
        return (lambda w: w), (lambda w: w)
    move = lambda order: lambda w: np.concatenate([w[..., :start], w[..., start:][..., order]], -1)
    return move(perm), move(np.argsort(perm))


def _mla_mapping(
    config: ModelConfig, interleave: bool
) -> dict[str, tuple[str, Callable, Callable]]:
    """Multi-head latent attention's tensors (DeepSeek-V3 names)."""
    m, n, d = config.mla, config.num_heads, config.hidden_size
    qk, r = m.qk_head_dim, m.kv_lora_rank
    q_in, q_out = _rope_last(m.qk_nope_head_dim, m.qk_rope_head_dim, interleave)
    kv_in, kv_out = _rope_last(r, m.qk_rope_head_dim, interleave)

    def heads(rows, width, query=False):  # [N*width, rows] <-> [rows, N, width]
        fix_in, fix_out = (q_in, q_out) if query else ((lambda w: w),) * 2  # q's RoPE dims
        return (
            lambda w: fix_in(w.reshape(n, width, rows).transpose(2, 0, 1)),
            lambda w: fix_out(w).transpose(1, 2, 0).reshape(n * width, rows),
        )

    same = (lambda w: w, lambda w: w)
    attn = "model.layers.{layer}.self_attn."
    table = {
        "kv_a": (attn + "kv_a_proj_with_mqa.weight", lambda w: kv_in(w.T), lambda w: kv_out(w).T),
        "kv_a_norm": (attn + "kv_a_layernorm.weight", *same),
        "kv_b": (attn + "kv_b_proj.weight", *heads(r, m.qk_nope_head_dim + m.v_head_dim)),
        "o": (
            attn + "o_proj.weight",
            lambda w: w.reshape(d, n, m.v_head_dim).transpose(1, 2, 0),
            lambda w: w.transpose(2, 0, 1).reshape(d, n * m.v_head_dim),
        ),
    }
    if not m.q_lora_rank:
        return table | {"q": (attn + "q_proj.weight", *heads(d, qk, query=True))}
    return table | {
        "q_a": (attn + "q_a_proj.weight", lambda w: w.T, lambda w: w.T),
        "q_a_norm": (attn + "q_a_layernorm.weight", *same),
        "q_b": (attn + "q_b_proj.weight", *heads(m.q_lora_rank, qk, query=True)),
    }


# (our leaf, HF name template, HF -> ours, ours -> HF). Templates take ``{layer}`` and, for
# expert leaves (``[E, ...]`` per layer), ``{expert}``. ``n``/``k``: query/kv head counts.
def _layer_mapping(
    config: ModelConfig, experts: bool, interleave: bool = True
) -> dict[str, tuple[str, Callable, Callable]]:
    """Every per-layer tensor of a stack (``experts``: the MoE stack): ``interleave``, DeepSeek's
    ``rope_interleave``."""
    same = (lambda w: w, lambda w: w)
    transpose = (lambda w: w.T, lambda w: w.T)
    mlp = "model.layers.{layer}.mlp."
    table = {
        "attn_norm": ("model.layers.{layer}.input_layernorm.weight", *same),
        "mlp_norm": ("model.layers.{layer}.post_attention_layernorm.weight", *same),
    }
    if config.mla is not None:
        table |= _mla_mapping(config, interleave)
    else:
        table |= _gqa_mapping(config)
    if not experts:
        return table | {
            "gate": (mlp + "gate_proj.weight", *transpose),
            "up": (mlp + "up_proj.weight", *transpose),
            "down": (mlp + "down_proj.weight", *transpose),
        }
    expert = mlp + "experts.{expert}."
    table |= {
        "router": (mlp + "gate.weight", *transpose),  # [E, D] <-> [D, E]
        "expert_gate": (expert + "gate_proj.weight", *transpose),
        "expert_up": (expert + "up_proj.weight", *transpose),
        "expert_down": (expert + "down_proj.weight", *transpose),
    }
    if config.moe.router == "sigmoid":
        table["router_bias"] = (mlp + "gate.e_score_correction_bias", *same)
    if config.moe.shared_experts:
        shared = mlp + "shared_experts."
        table |= {
            "shared_gate": (shared + "gate_proj.weight", *transpose),
            "shared_up": (shared + "up_proj.weight", *transpose),
            "shared_down": (shared + "down_proj.weight", *transpose),
        }
    return table


def _gqa_mapping(config: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
    """Grouped-query attention's tensors (Llama/Qwen names)."""
    n, k, h, d = config.num_heads, config.num_kv_heads, config.head_dim, config.hidden_size

    def proj(heads):  # [heads*H, D] <-> [D, heads, H]
        return (
            lambda w: w.reshape(heads, h, d).transpose(2, 0, 1),
            lambda w: w.transpose(1, 2, 0).reshape(heads * h, d),
        )

    def bias(heads):  # [heads*H] <-> [heads, H]
        return (lambda b: b.reshape(heads, h), lambda b: b.reshape(heads * h))

    same = (lambda w: w, lambda w: w)
    attn = "model.layers.{layer}.self_attn."
    table = {
        "q": (attn + "q_proj.weight", *proj(n)),
        "k": (attn + "k_proj.weight", *proj(k)),
        "v": (attn + "v_proj.weight", *proj(k)),
        "o": (
            attn + "o_proj.weight",
            lambda w: w.reshape(d, n, h).transpose(1, 2, 0),
            lambda w: w.transpose(2, 0, 1).reshape(d, n * h),
        ),
    }
    if config.qkv_bias:
        table.update(
            q_bias=(attn + "q_proj.bias", *bias(n)),
            k_bias=(attn + "k_proj.bias", *bias(k)),
            v_bias=(attn + "v_proj.bias", *bias(k)),
        )
    if config.o_bias:
        table.update(o_bias=(attn + "o_proj.bias", *same))
    if config.qk_norm:
        table.update(q_norm=(attn + "q_norm.weight", *same), k_norm=(attn + "k_norm.weight", *same))
    return table


def _stacks(config: ModelConfig) -> list[tuple[str, range, bool]]:
    """Each stacked param group: (its key, the HF layer indices it holds, has experts)."""
    if config.moe is None:
        return [("layers", range(config.num_layers), False)]
    first = config.moe.dense_layers
    dense = [("dense_layers", range(first), False)] if first else []
    return [*dense, ("layers", range(first, config.num_layers), True)]


def _top_mapping(config: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
    same = (lambda w: w, lambda w: w)
    table = {
        "embed": ("model.embed_tokens.weight", *same),
        "final_norm": ("model.norm.weight", *same),
    }
    if config.score_head:
        table["score"] = ("score.weight", lambda w: w[0], lambda w: w[None, :])
    elif not config.tie_embeddings:
        table["lm_head"] = ("lm_head.weight", lambda w: w.T, lambda w: w.T)
    return table


# ----------------------------------------------------------------------------- load


def _clear_weights(path: Path) -> None:
    """``path`` made, without an earlier export's shards or index (read instead of new ones)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in [*path.glob("model*.safetensors"), *path.glob("model.safetensors.index.json")]:
        stale.unlink()


def _open_safetensors(file: Path):
    try:
        return safe_open(str(file), framework="np")
    except Exception as e:  # safetensors' own error type: a cut or corrupt file
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from None


class _TensorIndex:
    """Lazy access to the tensors of a (possibly sharded) safetensors checkpoint directory."""

    def __init__(self, path: Path):
        index_file = path / "model.safetensors.index.json"
        if index_file.exists():
            weight_map = json.loads(index_file.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in path.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"{path}: no *.safetensors files")
            weight_map = None
        self._handles = {f: _open_safetensors(path / f) for f in files}
        if weight_map is None:
            weight_map = {name: f for f, h in self._handles.items() for name in h.keys()}
        self.weight_map = weight_map
        self.path = path

    def get(self, name: str) -> np.ndarray:
        if name not in self.weight_map:
            raise KeyError(f"{self.path}: tensor {name!r} not found in the checkpoint")
        return self._handles[self.weight_map[name]].get_tensor(name)


def load(
    path: str | os.PathLike, mesh=None, transform: Callable | None = None, **config_overrides
) -> tuple[ModelConfig, dict]:
    """Loads a Hugging Face checkpoint directory into ``(ModelConfig, params)``.

    Args:
      path: directory with ``config.json`` and ``model.safetensors`` or sharded
        ``model-0000x-of-0000y.safetensors`` files (+ ``model.safetensors.index.json``).
      mesh: optional mesh; each param is then placed shard by shard with the rules' sharding.
      transform: ``fn(keys, array, config) -> leaf`` run on each leaf once placed (``keys``:
        e.g. ``("layers", "q")``): a quantized base holds one full-precision leaf at a time.
      **config_overrides: ``ModelConfig`` fields to override (e.g. ``param_dtype="bfloat16"``).
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} not found (expected a Hugging Face checkpoint)")
    hf_config = json.loads(config_file.read_text())
    config = config_from_hf(hf_config, **config_overrides)
    interleave = bool(hf_config.get("rope_interleave", True))  # DeepSeek's RoPE layout
    tensors = _TensorIndex(path)
    shapes = abstract_params(config)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, shapes)
    else:
        shardings = param_shardings(config, mesh)
    dtype = config.params_dtype

    def place(shaped, sharding, read: Callable[[tuple], np.ndarray], keys: tuple = ()):
        array = jax.make_array_from_callback(
            shaped.shape, sharding, lambda idx: np.asarray(read(idx), dtype=dtype)
        )
        return array if transform is None else transform(keys, array, config)

    params: dict = {}
    for leaf, (name, to_ours, _) in _top_mapping(config).items():
        read = lambda idx, name=name, fn=to_ours: fn(tensors.get(name))[idx]
        params[leaf] = place(shapes[leaf], shardings[leaf], read, (leaf,))
    num_experts = config.moe.num_experts if config.moe else 0
    for stack, layer_ids, experts in _stacks(config):
        params[stack] = {}
        for leaf, (template, to_ours, _) in _layer_mapping(config, experts, interleave).items():

            def read(idx, template=template, fn=to_ours, layer_ids=layer_ids):
                get = lambda **at: fn(tensors.get(template.format(**at)))
                if "{expert}" not in template:
                    return np.stack([get(layer=i)[idx[1:]] for i in layer_ids[idx[0]]])
                return np.stack(
                    [
                        np.stack(
                            [get(layer=i, expert=e)[idx[2:]] for e in range(num_experts)[idx[1]]]
                        )
                        for i in layer_ids[idx[0]]
                    ]
                )

            keys = (stack, leaf)
            params[stack][leaf] = place(shapes[stack][leaf], shardings[stack][leaf], read, keys)
    return config, params


# ----------------------------------------------------------------------------- save


def save(
    path: str | os.PathLike,
    config: ModelConfig,
    params: dict,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 4 * 2**30,
) -> None:
    """Writes ``params`` as a Hugging Face checkpoint (``config.json`` + safetensors shards).

    Args:
      dtype: "float32" / "bfloat16" / "float16" for the written tensors (default: param dtype).
      max_shard_bytes: split into ``model-0000x-of-0000y.safetensors`` + index above this size.
    Only process 0 writes; every process must call (multi-host gathers are collective).
    """
    path = Path(path)
    dtype = dtype or config.param_dtype
    np_dtype = np.dtype(jax.numpy.dtype(dtype))
    tensors: dict[str, np.ndarray] = {}
    for leaf, (name, _, to_hf) in _top_mapping(config).items():
        tensors[name] = np.ascontiguousarray(
            to_hf(np.asarray(multihost.to_host(params[leaf]))).astype(np_dtype)
        )
    for stack, layer_ids, experts in _stacks(config):
        for leaf, (template, _, to_hf) in _layer_mapping(config, experts).items():
            stacked = np.asarray(multihost.to_host(params[stack][leaf]))
            for j, i in enumerate(layer_ids):
                per_expert = (
                    enumerate(stacked[j]) if "{expert}" in template else [(None, stacked[j])]
                )
                for e, w in per_expert:
                    name = template.format(layer=i, expert=e)
                    tensors[name] = np.ascontiguousarray(to_hf(w).astype(np_dtype))
    if jax.process_index() != 0:
        return
    _clear_weights(path)
    (path / "config.json").write_text(json.dumps(config_to_hf(config, dtype), indent=2))
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, array in tensors.items():
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(path / "model.safetensors"), metadata=metadata)
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, fname))
    index = {
        "metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
        "weight_map": weight_map,
    }
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
