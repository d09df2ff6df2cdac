"""Sharded sampling (rows over the data axes, heads over tensor) equals the unsharded run."""

import jax
import numpy as np
import pytest
from sampler_common import BUCKETS, CONFIG

from r1jax.model import param_shardings
from r1jax.sampling import Categorical, Sampler
from r1jax.sharding import MeshConfig, make_mesh

PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [9]]  # 4 prompts x G=2 = 8 rows
KW = dict(num_samples=2, max_new_tokens=6, method=Categorical(temperature=0.9, top_k=20))


@pytest.fixture(scope="module")
def unsharded(params):
    return Sampler(CONFIG, buckets=BUCKETS)(params, PROMPTS, rng=jax.random.key(11), **KW)


@pytest.mark.parametrize(
    "shape, layout",
    [((8, 1, 1), "default"), ((2, 2, 2), "default"), ((2, 2, 2), "auto")]
    + [((8, 1, 1), "split"), ((2, 2, 2), "split")],
    ids=str,
)
def test_sharded_sampling_equals_unsharded(params, unsharded, shape, layout):
    """Also with the state in the device layout XLA picks for the decode loop (what TPUs run),
    and with the loop's weights and cache split per layer (what CPUs run)."""
    mesh = make_mesh(MeshConfig(*shape))
    sharded_params = jax.device_put(params, param_shardings(CONFIG, mesh))
    sampler = Sampler(CONFIG, mesh=mesh, buckets=BUCKETS, layout=layout)
    out = sampler(sharded_params, PROMPTS, rng=jax.random.key(11), **KW)
    np.testing.assert_array_equal(out.tokens, unsharded.tokens)
    np.testing.assert_array_equal(out.lengths, unsharded.lengths)
    np.testing.assert_allclose(out.logprobs, unsharded.logprobs, atol=1e-5)
    # The work really was split: rows over data(+fsdp), the cache's kv heads over tensor.
    state, _, _ = sampler.prefill(
        sharded_params,
        PROMPTS,
        rng=jax.random.key(11),
        method=KW["method"],
        num_samples=2,
        max_new_tokens=6,
        table=np.full((4, 4), -1, np.int32),
    )
    rows_axes = _spec(state.tokens_BT)[0]
    rows_axes = (rows_axes,) if isinstance(rows_axes, str) else tuple(rows_axes)
    assert rows_axes == tuple(a for a in ("data", "fsdp") if mesh.shape[a] > 1)
    assert _spec(state.cache.k)[2] == ("tensor" if shape[2] > 1 else None)


def _spec(x):
    spec = tuple(x.sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))
