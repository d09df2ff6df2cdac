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
