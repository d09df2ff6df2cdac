"""Model hyper-parameters as a frozen (hashable, jit-static) dataclass: ``config.model``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from r1jax.config.schema import unknown_key

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
# "xla": the reference (O(T*S) scores); "blockwise": online softmax in plain JAX; "cudnn" (GPU),
# "splash" (TPU): fused kernels; "auto" picks per call (r1jax.model.attention_kernels).
ATTENTION_IMPLS = ("auto", "xla", "blockwise", "cudnn", "splash")
PAGED_ATTENTION = ("auto", "kernel", "gather")
_DTYPES = ("float32", "bfloat16", "float16")


ROPE_TYPES = ("llama3", "yarn")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE scaling beyond the pretraining context, as Hugging Face's ``rope_type``:

    "llama3": Llama-3.1's frequency-dependent scaling (``factor``, ``low_freq_factor``,
      ``high_freq_factor``, ``original_max_position_embeddings``).
    "yarn": YaRN (Peng et al. 2023; DeepSeek-V3/R1, Moonlight, long-context Qwen): frequencies
      interpolated by ``factor`` below ``beta_slow`` rotations, kept above ``beta_fast``, ramped
      between (over the original context); cos/sin scaled by ``attention_factor`` (0: inferred
      from ``factor``, and ``mscale`` / ``mscale_all_dim`` when both are set, as transformers
      does); with MLA, ``mscale_all_dim`` also scales the softmax by mscale^2 (DeepSeek's
      attention). ``truncate``: round the ramp's ends to whole dims.
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    rope_type: str = "llama3"
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 0.0
    mscale_all_dim: float = 0.0
    attention_factor: float = 0.0
    truncate: bool = True

    def __post_init__(self):
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(
                f"config.model.rope_scaling.rope_type={self.rope_type!r}; one of {ROPE_TYPES}"
            )


ROUTERS = ("softmax", "sigmoid")


@dataclasses.dataclass(frozen=True)
class MLAConfig:
    """Multi-head latent attention (DeepSeek-V2/V3; ``r1jax.model.mla``).

    Keys and values come from a compressed latent of ``kv_lora_rank`` dims (RMS-normed) per
    token, up-projected per head to ``qk_nope_head_dim`` key and ``v_head_dim`` value dims; a
    ``qk_rope_head_dim`` RoPE key is shared by all heads. Queries come from a ``q_lora_rank``
    latent (0: straight from the hidden state). A KV cache holds only the latent and the RoPE
    key: ``kv_lora_rank + qk_rope_head_dim`` values per token and layer.
    """

    kv_lora_rank: int = 32
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < (0 if f.name == "q_lora_rank" else 1):
                raise ValueError(f"config.model.mla.{f.name}={getattr(self, f.name)}: too small")
        if self.qk_rope_head_dim % 2:
            raise ValueError("config.model.mla.qk_rope_head_dim must be even for RoPE")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """What the cache holds per token and layer: the latent and the RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-experts MLP (``r1jax.model.moe``): dropless top-k routing over ``num_experts``
    SwiGLU experts of width ``expert_mlp_dim``.

    ``router="softmax"`` is Qwen3-MoE (softmax over all experts, top-k, renormalised when
    ``norm_topk_prob``); ``"sigmoid"`` is DeepSeek-V3 (sigmoid scores; the choice adds a learned
    correction bias and is limited to the ``groups_per_token`` best of ``expert_groups`` groups,
    ranked by the sum of each group's two best scores; weights are the chosen sigmoid scores,
    renormalised when ``norm_topk_prob``, times ``routed_scaling``). ``shared_experts``: a dense
    SwiGLU of width ``shared_experts * expert_mlp_dim`` every token also passes through.
    ``dense_layers``: the first this many layers keep the dense MLP of width ``mlp_dim``.
    Training adds ``balance_loss_weight`` times the load-balance loss (Switch Transformer:
    E * sum_e load_e * mean probability_e) and ``z_loss_weight`` times the router z-loss
    (ST-MoE: mean logsumexp(logits)^2), each averaged over the MoE layers.
    ``capacity_factor`` > 0 with an ``expert`` mesh axis X > 1: expert parallelism
    (``r1jax.model.expert_parallel``: each device keeps E / X experts, tokens travel by
    all-to-all, at most ceil(capacity_factor * tokens * K / X) pairs per device and
    destination, the rest dropped and counted); 0: dropless, a layer's experts gathered to
    every device.
    """

    num_experts: int = 8
    experts_per_token: int = 2
    expert_mlp_dim: int = 64
    router: str = "softmax"
    norm_topk_prob: bool = True
    expert_groups: int = 1
    groups_per_token: int = 1
    routed_scaling: float = 1.0
    shared_experts: int = 0
    dense_layers: int = 0
    balance_loss_weight: float = 0.0
    z_loss_weight: float = 0.0
    capacity_factor: float = 0.0

    def __post_init__(self):
        where = "config.model.moe"
        if self.router not in ROUTERS:
            raise ValueError(f"{where}.router={self.router!r}; one of {ROUTERS}")
        if not 1 <= self.experts_per_token <= self.num_experts:
            raise ValueError(
                f"{where}.experts_per_token={self.experts_per_token}: between 1 and "
                f"num_experts={self.num_experts}"
            )
        if self.num_experts % self.expert_groups:
            raise ValueError(
                f"{where}.expert_groups={self.expert_groups} must divide "
                f"num_experts={self.num_experts}"
            )
        if not 1 <= self.groups_per_token <= self.expert_groups:
            raise ValueError(
                f"{where}.groups_per_token={self.groups_per_token}: between 1 and "
                f"expert_groups={self.expert_groups}"
            )
        per_group = self.num_experts // self.expert_groups
        if self.expert_groups > 1 and per_group < 2:
            raise ValueError(f"{where}: group-limited routing needs >= 2 experts per group")
        if self.experts_per_token > self.groups_per_token * per_group:
            raise ValueError(
                f"{where}: experts_per_token={self.experts_per_token} exceeds the "
                f"{self.groups_per_token} groups x {per_group} experts a token may choose from"
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Llama/Qwen2-family decoder.

    ``param_dtype`` is what params are stored in (fp32 master weights for training);
    ``compute_dtype`` is what matmuls run in (bf16 on accelerators). Logits are returned in fp32.
    """

    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    mlp_dim: int = 128
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    o_bias: bool = False  # the attention output projection's bias (Qwen3's, Llama's attention_bias)
    tie_embeddings: bool = True
    sliding_window: int | None = None
    attention_impl: str = "auto"
    attention_block: int = 512  # query/key block of "blockwise" (and "splash", rounded to 128)
    # Decode attention over a paged KV cache (``model/paged_attention.py``): "auto" the Pallas
    # kernel where it lowers (TPU, GPU), else a gather; "kernel" (an error where it does not)
    # or "gather".
    paged_attention: str = "auto"
    max_position_embeddings: int = 4096
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat_policy: str = "none"
    # Layers per iteration of the scan over stacked layers (``lax.scan``'s ``unroll``): 1 = a
    # loop (compile time flat in depth), >= num_layers = unrolled (each layer's weights a static
    # slice; slower to compile). docs/sampler.md has both figures (GRPO iteration -11% unrolled).
    scan_unroll: int = 1
    init_std: float = 0.02
    # Losses run the LM head over chunks of this many positions under remat, so only
    # [B, chunk, V] logits exist at a time (r1jax.losses.chunked); 0 = all positions at once.
    logits_chunk: int = 1024
    # A reward model: a scalar head ``score`` [D] on the last token's final hidden state in
    # place of the LM head (``r1jax.model.reward``); set by ``kind = "reward_model"`` stages.
    score_head: bool = False
    # Qwen3: RMSNorm over each query and key head (``q_norm``, ``k_norm`` [H]) before RoPE.
    qk_norm: bool = False
    # A mixture of experts in place of the dense MLP (None: dense everywhere).
    moe: MoEConfig | None = None
    # Multi-head latent attention in place of grouped-query attention (None: GQA).
    mla: MLAConfig | None = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads={self.num_heads} must be a multiple of "
                f"model.num_kv_heads={self.num_kv_heads}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"model.remat_policy={self.remat_policy!r}; one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"model.attention_impl={self.attention_impl!r}; one of {ATTENTION_IMPLS}"
            )
        if self.paged_attention not in PAGED_ATTENTION:
            raise ValueError(
                f"model.paged_attention={self.paged_attention!r}; one of {PAGED_ATTENTION}"
            )
        if not isinstance(self.scan_unroll, int) or self.scan_unroll < 1:
            raise ValueError(f"model.scan_unroll={self.scan_unroll!r}; a positive int")
        if not isinstance(self.attention_block, int) or self.attention_block < 1:
            raise ValueError(f"model.attention_block={self.attention_block!r}; a positive int")
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"model.{name}={getattr(self, name)!r}; one of {list(_DTYPES)}")
        if self.head_dim % 2:
            raise ValueError(f"model.head_dim={self.head_dim} must be even for RoPE")
        if self.logits_chunk < 0:
            raise ValueError(f"model.logits_chunk={self.logits_chunk}; >= 0 (0 = unchunked)")
        if self.mla is not None and (
            self.qkv_bias or self.o_bias or self.qk_norm or self.head_dim != self.mla.qk_head_dim
        ):
            raise ValueError(
                "model.mla: head_dim must be qk_nope_head_dim + qk_rope_head_dim "
                f"({self.mla.qk_head_dim}), without qkv_bias, o_bias or qk_norm"
            )
        if self.moe is not None and self.moe.dense_layers >= self.num_layers:
            raise ValueError(
                f"model.moe.dense_layers={self.moe.dense_layers}: fewer than "
                f"num_layers={self.num_layers} (some layer must be a mixture of experts)"
            )

    @property
    def moe_layers(self) -> int:
        """How many layers (the last ones) have a mixture of experts."""
        return 0 if self.moe is None else self.num_layers - self.moe.dense_layers

    @property
    def params_dtype(self):
        import jax.numpy as jnp  # config files import this module: no jax until it is used

        return jnp.dtype(self.param_dtype)

    @property
    def dtype(self):
        import jax.numpy as jnp

        return jnp.dtype(self.compute_dtype)

    @property
    def num_params(self) -> int:
        d, f, n, k, h = (
            self.hidden_size,
            self.mlp_dim,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
        )
        attention = 2 * d + d * h * (n + 2 * k) + n * h * d
        attention += h * (n + 2 * k) * self.qkv_bias + 2 * h * self.qk_norm + d * self.o_bias
        if self.mla is not None:
            m = self.mla
            queries = d * n * h if not m.q_lora_rank else m.q_lora_rank * (d + 1 + n * h)
            keys_values = d * m.latent_dim + m.kv_lora_rank * (
                1 + n * (m.qk_nope_head_dim + m.v_head_dim)
            )
            attention = 2 * d + queries + keys_values + n * m.v_head_dim * d
        moe = 0
        if self.moe is not None:
            e, fe = self.moe.num_experts, self.moe.expert_mlp_dim
            moe = d * e + 3 * e * d * fe + 3 * d * fe * self.moe.shared_experts
            moe += e * (self.moe.router == "sigmoid")
        dense_layers = self.num_layers - self.moe_layers
        has_lm_head = not self.tie_embeddings and not self.score_head
        embed = self.vocab_size * d * (2 if has_lm_head else 1) + (d if self.score_head else 0)
        layers = self.num_layers * attention + dense_layers * 3 * d * f + self.moe_layers * moe
        return embed + d + layers

    @property
    def num_active_params(self) -> int:
        """Parameters one token passes through (all of them in a dense model; with experts, the
        ``experts_per_token`` chosen of ``num_experts``)."""
        if self.moe is None:
            return self.num_params
        unused = self.moe.num_experts - self.moe.experts_per_token
        per_expert = 3 * self.hidden_size * self.moe.expert_mlp_dim
        return self.num_params - self.moe_layers * unused * per_expert

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, cfg: Mapping, where: str = "config.model") -> ModelConfig:
        """From a plain dict or ``ml_collections.ConfigDict`` (the ``config.model`` section)."""
        cfg = dict(cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        for key in cfg:
            if key not in names:
                raise ValueError(unknown_key(where, key, names))
        scaling = cfg.get("rope_scaling")
        if scaling is not None and not isinstance(scaling, RopeScaling):
            cfg["rope_scaling"] = RopeScaling(**dict(scaling))
        for name, section in (("moe", MoEConfig), ("mla", MLAConfig)):
            value = cfg.get(name)
            if value is not None and not isinstance(value, section):
                value = dict(value)
                names = {f.name for f in dataclasses.fields(section)}
                for key in value:
                    if key not in names:
                        raise ValueError(unknown_key(f"{where}.{name}", key, names))
                cfg[name] = section(**value)
        return cls(**cfg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
