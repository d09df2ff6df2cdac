"""Hugging Face checkpoints (``config.json`` + ``*.safetensors``) <-> r1jax (config, params).

Supported families: Qwen2 / Qwen2.5 (``Qwen2ForCausalLM``, QKV bias) and Llama 3.x
(``LlamaForCausalLM``, llama3 RoPE scaling); the DeepSeek-R1-Distill models are of these two.

Loading is lazy and sharded: each device shard is read from the memory-mapped safetensors by
``jax.make_array_from_callback``, so a parameter is never materialised whole on the host (only
the layers a shard covers are read).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from r1jax.config.model import ModelConfig, RopeScaling
from r1jax.model.params import abstract_params, param_shardings

_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}


# ----------------------------------------------------------------------------- config


def config_from_hf(hf: dict, **overrides) -> ModelConfig:
    """``ModelConfig`` from a Hugging Face ``config.json`` dict (``overrides`` win)."""
    model_type = hf.get("model_type")
    if model_type not in _ARCHITECTURES:
        raise ValueError(
            f"config.json: model_type={model_type!r} unsupported; "
            f"supported: {sorted(_ARCHITECTURES)}"
        )
    if hf.get("mlp_bias"):
        raise ValueError("config.json: mlp_bias=true is not supported")
    if model_type == "llama" and hf.get("attention_bias"):
        raise ValueError("config.json: attention_bias=true (o_proj bias) is not supported")
    # transformers >= 5 writes "rope_parameters"; older versions "rope_theta" + "rope_scaling".
    rope = dict(hf.get("rope_parameters") or {})
    rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    scaling_cfg = rope if rope.get("rope_type", "default") != "default" else hf.get("rope_scaling")
    scaling = None
    if scaling_cfg:
        kind = scaling_cfg.get("rope_type", scaling_cfg.get("type"))
        if kind != "llama3":
            raise ValueError(f"config.json: rope scaling type {kind!r} unsupported (llama3 only)")
        scaling = RopeScaling(
            factor=float(scaling_cfg["factor"]),
            low_freq_factor=float(scaling_cfg["low_freq_factor"]),
            high_freq_factor=float(scaling_cfg["high_freq_factor"]),
            original_max_position_embeddings=int(scaling_cfg["original_max_position_embeddings"]),
        )
    sliding = None
    if hf.get("use_sliding_window"):
        if hf.get("max_window_layers", 0) not in (0, hf["num_hidden_layers"]):
            raise ValueError("config.json: sliding window on only some layers is not supported")
        sliding = int(hf["sliding_window"])
    num_heads = hf["num_attention_heads"]
    fields = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
        mlp_dim=hf["intermediate_size"],
        rope_theta=float(rope_theta),
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias")),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        sliding_window=sliding,
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        score_head=_is_reward_model(hf),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def _is_reward_model(hf: dict) -> bool:
    """A ``*ForSequenceClassification`` checkpoint with one label: a reward model (its
    ``score.weight`` [1, D] is our ``score``); other label counts are refused."""
    if not any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or ()):
        return False
    labels = hf.get("num_labels", len(hf.get("id2label") or {}) or 2)
    if labels != 1:
        raise ValueError(f"config.json: a sequence classifier with {labels} labels; 1 (a reward)")
    return True


def config_to_hf(config: ModelConfig, dtype: str) -> dict:
    """A Hugging Face ``config.json`` dict for ``config`` (Qwen2 if it has QKV bias, else Llama;
    a reward model as ``*ForSequenceClassification`` with one label)."""
    model_type = "qwen2" if config.qkv_bias else "llama"
    rope_scaling = None
    if config.rope_scaling is not None:
        rope_scaling = {"rope_type": "llama3", **dataclasses.asdict(config.rope_scaling)}
    architecture = _ARCHITECTURES[model_type]
    if config.score_head:
        architecture = architecture.replace("ForCausalLM", "ForSequenceClassification")
    hf = dict(
        architectures=[architecture],
        model_type=model_type,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.mlp_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        hidden_act="silu",
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=config.tie_embeddings,
        max_position_embeddings=config.max_position_embeddings,
        torch_dtype=dtype,
        use_cache=True,
    )
    if config.score_head:
        hf.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    if model_type == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    else:
        hf.update(
            use_sliding_window=config.sliding_window is not None,
            sliding_window=config.sliding_window,
            max_window_layers=config.num_layers,
        )
    return hf


# ----------------------------------------------------------------------------- name mapping


# (our leaf, HF name template, HF -> ours, ours -> HF). ``n``/``k``: query/kv head counts.
def _layer_mapping(config: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
    n, k, h, d = config.num_heads, config.num_kv_heads, config.head_dim, config.hidden_size

    def proj(heads):  # [heads*H, D] <-> [D, heads, H]
        return (
            lambda w: w.reshape(heads, h, d).transpose(2, 0, 1),
            lambda w: w.transpose(1, 2, 0).reshape(heads * h, d),
        )

    def bias(heads):  # [heads*H] <-> [heads, H]
        return (lambda b: b.reshape(heads, h), lambda b: b.reshape(heads * h))

    same = (lambda w: w, lambda w: w)
    transpose = (lambda w: w.T, lambda w: w.T)
    attn, mlp = "model.layers.{}.self_attn.", "model.layers.{}.mlp."
    table = {
        "attn_norm": ("model.layers.{}.input_layernorm.weight", *same),
        "q": (attn + "q_proj.weight", *proj(n)),
        "k": (attn + "k_proj.weight", *proj(k)),
        "v": (attn + "v_proj.weight", *proj(k)),
        "o": (
            attn + "o_proj.weight",
            lambda w: w.reshape(d, n, h).transpose(1, 2, 0),
            lambda w: w.transpose(2, 0, 1).reshape(d, n * h),
        ),
        "mlp_norm": ("model.layers.{}.post_attention_layernorm.weight", *same),
        "gate": (mlp + "gate_proj.weight", *transpose),
        "up": (mlp + "up_proj.weight", *transpose),
        "down": (mlp + "down_proj.weight", *transpose),
    }
    if config.qkv_bias:
        table.update(
            q_bias=(attn + "q_proj.bias", *bias(n)),
            k_bias=(attn + "k_proj.bias", *bias(k)),
            v_bias=(attn + "v_proj.bias", *bias(k)),
        )
    return table


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
        self._handles = {f: safe_open(str(path / f), framework="np") for f in files}
        if weight_map is None:
            weight_map = {name: f for f, h in self._handles.items() for name in h.keys()}
        self.weight_map = weight_map
        self.path = path

    def get(self, name: str) -> np.ndarray:
        if name not in self.weight_map:
            raise KeyError(f"{self.path}: tensor {name!r} not found in the checkpoint")
        return self._handles[self.weight_map[name]].get_tensor(name)


def load(path: str | os.PathLike, mesh=None, **config_overrides) -> tuple[ModelConfig, dict]:
    """Loads a Hugging Face checkpoint directory into ``(ModelConfig, params)``.

    Args:
      path: directory with ``config.json`` and ``model.safetensors`` or sharded
        ``model-0000x-of-0000y.safetensors`` files (+ ``model.safetensors.index.json``).
      mesh: optional mesh; each param is then placed shard by shard with the rules' sharding.
      **config_overrides: ``ModelConfig`` fields to override (e.g. ``param_dtype="bfloat16"``).
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} not found (expected a Hugging Face checkpoint)")
    config = config_from_hf(json.loads(config_file.read_text()), **config_overrides)
    tensors = _TensorIndex(path)
    shapes = abstract_params(config)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, shapes)
    else:
        shardings = param_shardings(config, mesh)
    dtype = config.params_dtype

    def place(shaped, sharding, read: Callable[[tuple], np.ndarray]):
        return jax.make_array_from_callback(
            shaped.shape, sharding, lambda idx: np.asarray(read(idx), dtype=dtype)
        )

    params: dict = {"layers": {}}
    for leaf, (name, to_ours, _) in _top_mapping(config).items():
        read = lambda idx, name=name, fn=to_ours: fn(tensors.get(name))[idx]
        params[leaf] = place(shapes[leaf], shardings[leaf], read)
    for leaf, (template, to_ours, _) in _layer_mapping(config).items():

        def read(idx, template=template, fn=to_ours):
            layer_ids = range(config.num_layers)[idx[0]]
            return np.stack([fn(tensors.get(template.format(i)))[idx[1:]] for i in layer_ids])

        params["layers"][leaf] = place(shapes["layers"][leaf], shardings["layers"][leaf], read)
    return config, params


# ----------------------------------------------------------------------------- save


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


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
        tensors[name] = np.ascontiguousarray(to_hf(_to_host(params[leaf])).astype(np_dtype))
    for leaf, (template, _, to_hf) in _layer_mapping(config).items():
        stacked = _to_host(params["layers"][leaf])
        for i in range(config.num_layers):
            tensors[template.format(i)] = np.ascontiguousarray(to_hf(stacked[i]).astype(np_dtype))
    if jax.process_index() != 0:
        return
    path.mkdir(parents=True, exist_ok=True)
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
