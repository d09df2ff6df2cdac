"""``r1jax forward``: build a model from a config on the device mesh and run one forward pass.

r1jax forward --config=configs/tiny.py --config.mesh.fsdp=2 --batch=8 --length=16
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import flags

from r1jax import sharding
from r1jax.config import typed
from r1jax.config.flags import parse_config
from r1jax.model import forward, init_params, param_shardings


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_integer("batch", 8, "Batch size of the random token batch.", flag_values=fv)
    flags.DEFINE_integer("length", 16, "Sequence length of the random token batch.", flag_values=fv)


def main(argv: list[str]) -> int:
    config, fv = parse_config(
        argv, command="r1jax forward", default="configs/tiny.py", define_flags=_define, doc=__doc__
    )
    stage = typed(config)
    model_config, mesh = stage.model, sharding.make_mesh(stage.mesh)
    print(f"devices: {len(jax.devices())} x {jax.devices()[0].platform}; mesh {dict(mesh.shape)}")
    print(
        f"model: {model_config.num_params / 1e6:.3f}M params, {model_config.num_layers} layers, "
        f"compute {model_config.compute_dtype}"
    )
    start = time.perf_counter()
    params = init_params(model_config, jax.random.key(stage.seed), mesh=mesh)
    print(f"sharded init: {time.perf_counter() - start:.1f}s")
    for path, spec in jax.tree_util.tree_flatten_with_path(param_shardings(model_config, mesh))[0]:
        print(f"  {jax.tree_util.keystr(path):<24} {spec.spec}")
    tokens = jax.random.randint(
        jax.random.key(stage.seed + 1), (fv.batch, fv.length), 0, model_config.vocab_size
    )
    tokens = jax.device_put(tokens, sharding.named_sharding(mesh, ("batch", "seq"), tokens.shape))
    with jax.set_mesh(mesh):
        logits, _ = jax.jit(forward, static_argnums=2)(params, tokens, model_config)
    logits = np.asarray(logits)
    if not np.isfinite(logits).all():
        print("forward produced non-finite logits")
        return 1
    print(
        f"logits {logits.shape} {logits.dtype}: mean {logits.mean():+.4f} std {logits.std():.4f}"
        f"; next tokens of row 0: {logits[0].argmax(-1)[:8].tolist()}"
    )
    return 0
