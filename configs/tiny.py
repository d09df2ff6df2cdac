"""A tiny Qwen2-shaped model that runs in seconds on a laptop CPU.

Run:
  r1jax forward --config=configs/tiny.py
  r1jax forward --config=configs/tiny.py --config.model.num_layers=4 --config.mesh.tensor=2
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
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
    )


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = model_config()
    # Mesh axis sizes; -1 = all remaining devices.
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return config
