"""Config sections shared by the training config files (configs cannot import one another)."""

from __future__ import annotations

import ml_collections


def tiny_model(**overrides) -> ml_collections.ConfigDict:
    """The tiny Qwen2-shaped model of ``configs/tiny.py`` (seconds per step on a laptop CPU)."""
    model = dict(
        vocab_size=512,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        rope_theta=10000.0,
        rope_scaling=None,
        rms_norm_eps=1e-6,
        qkv_bias=True,
        tie_embeddings=True,
        sliding_window=None,
        max_position_embeddings=1024,
        param_dtype="float32",
        compute_dtype="float32",
        remat_policy="none",
        init_std=0.02,
    )
    return ml_collections.ConfigDict(model | overrides)


def optim(**overrides) -> ml_collections.ConfigDict:
    """``r1jax.train.OptimConfig`` fields: AdamW, warm-up + cosine, clipping at 1.0."""
    fields = dict(
        learning_rate=1e-3,
        schedule="cosine",
        warmup_steps=20,
        total_steps=200,
        end_lr_ratio=0.1,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.01,
        grad_clip_norm=1.0,
    )
    return ml_collections.ConfigDict(fields | overrides)


def train(**overrides) -> ml_collections.ConfigDict:
    """``r1jax.train.loop.LoopConfig`` fields."""
    fields = dict(
        objective="sft",
        steps=200,
        batch_size=16,
        seq_len=256,
        num_microbatches=1,
        log_every=10,
        checkpoint_every=100,
        keep_checkpoints=3,
        eval_every=0,
        transfer_guard="disallow",
    )
    return ml_collections.ConfigDict(fields | overrides)


def task_data(task: str = "arithmetic", **overrides) -> ml_collections.ConfigDict:
    """A built-in task with a sentencepiece tokenizer trained on it into the workdir.

    Set ``path`` (JSONL/Parquet) and ``tokenizer`` (a model file) to train on your own data.
    """
    fields = dict(
        task=task,
        task_options={},
        path="",
        tokenizer="",
        vocab_size=512,
        tokenizer_examples=2000,
        seed=0,
    )
    return ml_collections.ConfigDict(fields | overrides)


def grpo(**overrides) -> ml_collections.ConfigDict:
    """The flat ``config.grpo`` section (``r1jax.train.grpo_run.split_grpo_config``): rollout,
    loss and loop options, with R1's defaults (beta 0.001, T 1.0, G 8)."""
    fields = dict(
        # rollout
        num_prompts=4,  # groups per update; the batch has num_prompts * num_samples rows
        num_samples=8,  # G
        max_new_tokens=48,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        stop_strings=("</answer>",),
        stop_at_eos=True,
        dynamic_sampling=False,
        max_sampling_rounds=4,
        mask_truncated=False,
        overlong_cache=0,
        overlong_weight=1.0,
        advantage_scale="group",  # "group" | "batch" | "none" (Dr. GRPO)
        advantage_baseline="mean",  # "mean" | "leave_one_out"
        keep_sampler_logprobs=False,
        # loss
        beta=0.001,  # R1's KL weight; 0 keeps no reference params
        eps_low=0.2,
        eps_high=None,  # DAPO clip-higher: 0.28
        aggregation="seq_mean",  # "seq_mean" | "token_mean" (DAPO) | "constant" (Dr. GRPO)
        max_tokens=None,
        importance="token",  # "token" | "sequence" (GSPO)
        entropy_coef=0.0,
        tis_cap=None,  # truncated importance sampling (sampler vs trainer log-probs)
        log_entropy=True,
        # loop
        mu=1,  # inner updates per batch of rollouts
        ref_refresh_every=0,
        accuracy_key="accuracy",
        format_key="format",
    )
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ValueError(f"config_presets.grpo: unknown fields {sorted(unknown)}")
    return ml_collections.ConfigDict(fields | overrides)


def pretrained_family(
    shape: dict, mesh: dict, variant: str = "", rope_scaling: dict | None = None
) -> ml_collections.ConfigDict:
    """A config for a real checkpoint's ``shape`` (HF config.json fields in r1jax names): bf16
    compute, fp32 master params, remat of non-batch dots. ``variant="tiny"`` keeps the family's
    features (QKV bias, tying, RoPE scaling) at toy sizes on every local device."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(
        dict(
            shape,
            sliding_window=None,
            param_dtype="float32",
            compute_dtype="bfloat16",
            remat_policy="dots_no_batch",
            init_std=0.02,
        )
    )
    config.model.rope_scaling = None if rope_scaling is None else dict(rope_scaling)
    config.mesh = ml_collections.ConfigDict(mesh)
    if variant == "tiny":
        config.model.update(
            vocab_size=512,
            hidden_size=64,
            num_layers=2,
            mlp_dim=128,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            compute_dtype="float32",
            remat_policy="none",
        )
        config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return config
