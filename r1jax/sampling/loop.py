"""The jitted sampling program: one prefill, then a ``lax.while_loop`` of one-token decode steps.

Shape letters (the key in ``r1jax/__init__.py``): Q prompts (distinct), B = Q * G rows (G samples
per prompt, group-contiguous: row ``i * G + j`` is sample ``j`` of prompt ``i``), P prompt bucket
length, T ``max_new_tokens``, V vocab, E stop sequences, W their width, S = P + T cache slots.

The prefill runs the Q distinct prompts once and repeats the cache G times (a group shares its
prompt), then samples the first token. The decode loop carries an explicit ``SamplingState``;
rows that have stopped keep flowing through the (fixed-shape) batch but write padding, and the
loop exits as soon as every row has stopped. The state, KV cache included, is donated.

Randomness (``keys``): "step" draws one key per step for the whole batch; "request" gives every
row its own key sequence (``methods.request_keys``), so a row's tokens do not depend on the
batch it runs in: the continuous sampler (``continuous.py``) returns exactly these rows.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental.layout import Format, Layout

from r1jax.model import KVCache, ModelConfig, cache_shardings, init_cache, split_cache, transformer
from r1jax.sampling.compile_options import compiler_options, default_layout
from r1jax.sampling.methods import SamplingMethod, request_keys, sample_rows
from r1jax.sampling.stop import matches
from r1jax.sharding import named_sharding


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplingState:
    """Everything the decode loop carries (all on device).

    ``step``: int32 scalar, tokens generated so far (the next column of ``tokens_BT``).
    ``tokens_BT`` int32 (pad after a row's end), ``logprobs_BT`` fp32 (0 after the end),
    ``lengths_B`` int32 (stop token included), ``done_B`` bool (a stop condition fired),
    ``budget_B`` int32 (the row's own limit on new tokens, at most T),
    ``prompt_lengths_B`` int32 (real prompt tokens, i.e. the first generated position),
    ``recent_BW`` int32 last W tokens (-1 before the first), ``cache``, ``key`` (the call's key).
    ``experts_LBSK`` (``record_routing`` of a mixture of experts): int16 ``[L', B, P + T, K]``,
    the experts each MoE layer chose for each input token (the prompt's from the prefill,
    completion token t's when it is fed back at step t + 1; -1 where none was routed, e.g. the
    last token): what routing replay feeds the train step. None otherwise.
    """

    step: jax.Array
    tokens_BT: jax.Array
    logprobs_BT: jax.Array
    lengths_B: jax.Array
    done_B: jax.Array
    budget_B: jax.Array
    prompt_lengths_B: jax.Array
    recent_BW: jax.Array
    cache: KVCache
    key: jax.Array
    experts_LBSK: jax.Array | None = None


def _constrain(tree, shardings):
    return tree if shardings is None else jax.lax.with_sharding_constraint(tree, shardings)


def state_shardings(
    config: ModelConfig, rows: int, max_new: int, width: int, cache_len, mesh, record=False
):
    """NamedShardings of a ``SamplingState``: rows over the data axes, kv heads over tensor."""
    if mesh is None:
        return None
    experts = None
    if record:
        shape = (config.moe_layers, rows, cache_len, config.moe.experts_per_token)
        experts = named_sharding(mesh, (None, "batch", None, None), shape)
    rep = named_sharding(mesh, (), ())
    per_row = lambda *shape: named_sharding(mesh, ("batch",) + (None,) * (len(shape) - 1), shape)
    return SamplingState(
        step=rep,
        tokens_BT=per_row(rows, max_new),
        logprobs_BT=per_row(rows, max_new),
        lengths_B=per_row(rows),
        done_B=per_row(rows),
        budget_B=per_row(rows),
        prompt_lengths_B=per_row(rows),
        recent_BW=per_row(rows, width),
        cache=cache_shardings(config, rows, cache_len, mesh),
        key=rep,
        experts_LBSK=experts,
    )


KEY_SCHEMES = ("step", "request")
DECODE_WINDOWS = 4  # phases of the decode loop, each attending over a longer cache prefix


def _sample(method, logits_BV, key, step, keys: str):
    """Tokens and log-probs ``[B]`` of column ``step`` under the key scheme ``keys``."""
    if keys == "step":
        return method(logits_BV, jax.random.fold_in(key, step))
    rows_B = jnp.arange(logits_BV.shape[0], dtype=jnp.int32)
    return sample_rows(method, logits_BV, request_keys(key, rows_B, jnp.full_like(rows_B, step)))


def running(state: SamplingState) -> jax.Array:
    """Bool ``[B]``: rows that neither stopped nor used up their budget."""
    return ~state.done_B & (state.lengths_B < state.budget_B)


def _record(state: SamplingState, tokens_B, logprobs_B, stop_table_EW, pad_id: int):
    """Writes column ``state.step`` for the rows still running and updates the stop flags."""
    alive_B = running(state)
    tokens_B = jnp.where(alive_B, tokens_B, pad_id)
    logprobs_B = jnp.where(alive_B, logprobs_B, 0.0)
    recent_BW = jnp.concatenate([state.recent_BW[:, 1:], tokens_B[:, None]], axis=1)
    column = (0, state.step)
    return dataclasses.replace(
        state,
        step=state.step + 1,
        tokens_BT=jax.lax.dynamic_update_slice(state.tokens_BT, tokens_B[:, None], column),
        logprobs_BT=jax.lax.dynamic_update_slice(state.logprobs_BT, logprobs_B[:, None], column),
        lengths_B=state.lengths_B + alive_B.astype(jnp.int32),
        done_B=state.done_B | (alive_B & matches(recent_BW, stop_table_EW)),
        recent_BW=recent_BW,
    )


def prompt_forward(
    params, prompt_QP, prompt_mask_QP, config: ModelConfig, cache_len: int, router=False
):
    """The left-padded prompts ``[Q, P]`` through the model once: a ``[Q, cache_len]`` cache
    holding them and the fp32 logits ``[Q, V]`` of each prompt's last token (with ``router``,
    also the MoE layers' ``RouterStats``)."""
    cache = init_cache(config, prompt_QP.shape[0], cache_len)
    hidden_QPD, cache, stats = transformer.hidden_states_and_router(
        params,
        prompt_QP,
        config,
        positions=jnp.maximum(jnp.cumsum(prompt_mask_QP, axis=1) - 1, 0),
        segment_ids=prompt_mask_QP,
        cache=cache,
    )
    # Left padding puts every prompt's last token in the last column.
    logits_QV = transformer.logits_from_hidden(params, hidden_QPD[:, -1:], config)[:, 0]
    return (cache, logits_QV, stats) if router else (cache, logits_QV)


def _routing_record(prompt_stats, config: ModelConfig, num_samples: int, cache_len: int):
    """``SamplingState.experts_LBSK``: the prompts' experts (each repeated for its G rows),
    -1 in every completion slot until its token is fed back."""
    if config.moe is None:
        raise ValueError("record_routing: the model has no mixture of experts to record")
    prompt_LBPK = jnp.repeat(prompt_stats.experts, num_samples, axis=1).astype(jnp.int16)
    l, b, p, k = prompt_LBPK.shape
    return jnp.full((l, b, cache_len, k), -1, jnp.int16).at[:, :, :p].set(prompt_LBPK)


def prefill(
    params,
    prompt_QP: jax.Array,
    prompt_mask_QP: jax.Array,
    key: jax.Array,
    stop_table_EW: jax.Array,
    *,
    config: ModelConfig,
    method: SamplingMethod,
    num_samples: int,
    max_new_tokens: int,
    pad_id: int,
    mesh=None,
    keys: str = "step",
    budget_B: jax.Array | None = None,
    record_routing: bool = False,
) -> SamplingState:
    """Runs the left-padded prompts ``[Q, P]`` once and samples token 0 of all ``Q * G`` rows.
    ``budget_B``: each row's limit on new tokens (default ``max_new_tokens``);
    ``record_routing``: keep each token's experts (``SamplingState.experts_LBSK``)."""
    num_prompts, length = prompt_QP.shape
    rows, cache_len = num_prompts * num_samples, length + max_new_tokens
    cache, logits_QV, stats = prompt_forward(
        params, prompt_QP, prompt_mask_QP, config, cache_len, router=True
    )
    repeat = lambda a, axis: jnp.repeat(a, num_samples, axis=axis)
    experts = _routing_record(stats, config, num_samples, cache_len) if record_routing else None
    cache = KVCache(
        k=repeat(cache.k, 1),
        v=repeat(cache.v, 1),
        positions=repeat(cache.positions, 0),
        segment_ids=repeat(cache.segment_ids, 0),
        length=cache.length,
    )
    width = stop_table_EW.shape[1]
    state = SamplingState(
        step=jnp.zeros((), jnp.int32),
        tokens_BT=jnp.full((rows, max_new_tokens), pad_id, jnp.int32),
        logprobs_BT=jnp.zeros((rows, max_new_tokens), jnp.float32),
        lengths_B=jnp.zeros((rows,), jnp.int32),
        done_B=jnp.zeros((rows,), bool),
        budget_B=jnp.full((rows,), max_new_tokens, jnp.int32)
        if budget_B is None
        else jnp.minimum(budget_B.astype(jnp.int32), max_new_tokens),
        prompt_lengths_B=repeat(jnp.sum(prompt_mask_QP, axis=1).astype(jnp.int32), 0),
        recent_BW=jnp.full((rows, width), -1, jnp.int32),
        cache=cache,
        key=key,
        experts_LBSK=experts,
    )
    shardings = state_shardings(
        config, rows, max_new_tokens, width, cache_len, mesh, record_routing
    )
    state = _constrain(state, shardings)
    tokens_B, logprobs_B = _sample(method, repeat(logits_QV, 0), key, 0, keys)
    return _constrain(_record(state, tokens_B, logprobs_B, stop_table_EW, pad_id), shardings)


def decode(
    params,
    state: SamplingState,
    stop_table_EW: jax.Array,
    *,
    config: ModelConfig,
    method: SamplingMethod,
    pad_id: int,
    mesh=None,
    keys: str = "step",
    windows: int = DECODE_WINDOWS,
    split: bool = False,
) -> SamplingState:
    """Decode steps until every row has stopped or ``max_new_tokens`` columns are filled, in
    ``windows`` phases that attend over growing prefixes of the cache (``decode_windows``).
    ``split``: the loop holds each layer's weights and cache (in one chunk per phase) as
    buffers of their own (``split_cache``: what XLA:CPU reads without copying)."""
    rows, max_new = state.tokens_BT.shape
    record = state.experts_LBSK is not None
    shardings = state_shardings(
        config, rows, max_new, state.recent_BW.shape[1], state.cache.max_length, mesh, record
    )
    prompt_len = state.cache.max_length - max_new
    ends = decode_windows(prompt_len, max_new, windows)
    state = _constrain(state, shardings)
    if split:
        params, state, shardings = _split(params, state, shardings, config, ends)

    def keep_going(s: SamplingState, window: int):  # the next write stays inside the window
        return (s.step < max_new) & jnp.any(running(s)) & (s.cache.length < window)

    # RoPE's cos/sin of every slot's position, once: XLA fuses a step's into each layer's
    # query and key products, computing them there again (0.1-0.4 ms of a 5 ms CPU step).
    rope_SH = transformer.model_rope(config, jnp.arange(state.cache.max_length)[None])

    def step(s: SamplingState, window: int) -> SamplingState:
        logits_BV, cache, stats = _next_logits(params, s, config, window, rope_SH)
        tokens_B, logprobs_B = _sample(method, logits_BV, s.key, s.step, keys)
        s = dataclasses.replace(s, cache=cache)
        if record:
            s = _record_experts(s, stats, prompt_len)
        return _constrain(_record(s, tokens_B, logprobs_B, stop_table_EW, pad_id), shardings)

    for window in ends:
        state = jax.lax.while_loop(
            functools.partial(keep_going, window=window),
            functools.partial(step, window=window),
            state,
        )
    if split:
        state = dataclasses.replace(state, cache=split_cache.join_cache(state.cache))
    return state


def _next_logits(params, s: SamplingState, config: ModelConfig, window: int, rope_SH):
    """The last sampled tokens (column ``step - 1``) through the model: fp32 logits ``[B, V]``
    of the next, the cache with them written, the MoE layers' router stats."""
    last_B1 = jax.lax.dynamic_slice_in_dim(s.tokens_BT, s.step - 1, 1, axis=1)
    positions_B1 = (s.prompt_lengths_B + s.step - 1)[:, None]
    hidden_B1D, cache, stats = transformer.hidden_states_and_router(
        params,
        last_B1,
        config,
        positions=positions_B1,
        segment_ids=jnp.ones_like(last_B1),
        cache=s.cache,
        cache_window=window,
        rope=tuple(jnp.take(table[0], positions_B1, axis=0) for table in rope_SH),
    )
    return transformer.logits_from_hidden(params, hidden_B1D, config)[:, 0], cache, stats


def _split(params, state: SamplingState, shardings, config: ModelConfig, ends):
    """``decode(split=True)``'s params (``split_layers``), state (its cache in per-layer
    chunks ending at ``ends``, ``split_cache``) and the state's shardings."""
    cache = split_cache.split_cache(state.cache, ends)
    if shardings is not None:
        chunks = split_cache.split_shardings(shardings.cache, config.num_layers, ends)
        shardings = dataclasses.replace(shardings, cache=chunks)
    return transformer.split_layers(params), dataclasses.replace(state, cache=cache), shardings


def _record_experts(s: SamplingState, stats, prompt_len: int) -> SamplingState:
    """Records the experts of the fed token (completion column ``step - 1``, slot P + step - 1)."""
    column = (0, 0, prompt_len + s.step - 1, 0)
    experts = jax.lax.dynamic_update_slice(s.experts_LBSK, stats.experts.astype(jnp.int16), column)
    return dataclasses.replace(s, experts_LBSK=experts)


def decode_windows(prompt_len: int, max_new: int, count: int) -> tuple[int, ...]:
    """The cache prefixes the decode loop's ``count`` phases attend over: the prompt plus
    ``i / count`` of the new tokens, rounded up to 128 slots (8 under 1,024), the last the whole
    cache. A decode step then reads the cache's live part, not all ``P + T`` slots (at 32,768
    tokens, most steps of a long row read under half the cache)."""
    total = prompt_len + max_new
    multiple = 128 if total >= 1024 else 8
    ends = (prompt_len + -(-max_new * i // count) for i in range(1, count + 1))
    return tuple(sorted({min(total, -(-end // multiple) * multiple) for end in ends}))


@dataclasses.dataclass(frozen=True)
class Programs:
    """The jitted prefill and decode loop of one shape (``programs``); ``state`` is the
    abstract ``SamplingState`` passed between them."""

    prefill: Callable  # (params, prompt_QP, prompt_mask_QP, key, stop_table_EW) -> state
    decode: Callable  # (params, state, stop_table_EW) -> state; donates the state
    state: SamplingState


def programs(
    params,
    prompt_QP,
    prompt_mask_QP,
    key,
    stop_table_EW,
    *,
    config: ModelConfig,
    method: SamplingMethod,
    num_samples: int,
    max_new_tokens: int,
    pad_id: int,
    mesh=None,
    layout: str | None = None,
    keys: str = "step",
    windows: int = DECODE_WINDOWS,
    record_routing: bool = False,
) -> Programs:
    """Jits ``prefill`` and ``decode`` for these (abstract or concrete) arguments; call under
    the mesh (``jax.set_mesh``) the programs will run under.

    ``layout="auto"`` lets XLA choose the state's device layout: the decode loop is compiled
    once with ``Layout.AUTO``, and the prefill then returns the state in the layout it chose, so
    the loop updates the donated KV cache in place. With the default layout the TPU compiler
    copies the cache into its preferred tiling before the loop and back after it, holding it
    twice (Qwen2.5-1.5B, 16 rows x 32,768 tokens on v5e-8: 2.97 GiB of temporaries for a
    1.75 GiB cache; 1.24 GiB with "auto"). It costs one extra compile of the decode loop.
    ``layout="split"``: ``decode(split=True)``; None: ``default_layout``.
    """
    if keys not in KEY_SCHEMES:
        raise ValueError(f"keys={keys!r}; one of {KEY_SCHEMES}")
    common = dict(config=config, pad_id=pad_id, mesh=mesh, keys=keys)
    shape = dict(num_samples=num_samples, max_new_tokens=max_new_tokens)
    prefill_fn = functools.partial(
        prefill, method=method, record_routing=record_routing, **shape, **common
    )
    layout = layout or default_layout(config)
    split = layout == "split"
    decode_fn = functools.partial(decode, method=method, windows=windows, split=split, **common)
    state = jax.eval_shape(prefill_fn, params, prompt_QP, prompt_mask_QP, key, stop_table_EW)
    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), state)
    jit = functools.partial(jax.jit, compiler_options=compiler_options())
    if layout in ("default", "split"):
        return Programs(jit(prefill_fn), jit(decode_fn, donate_argnums=(1,)), state)
    if layout != "auto":
        raise ValueError(f"layout={layout!r}: 'default', 'split' or 'auto'")
    rows, width = state.recent_BW.shape
    shardings = state_shardings(
        config, rows, max_new_tokens, width, state.cache.max_length, mesh, record_routing
    ) or jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), state)
    # Arrays only: a PRNG key's layout is that of its uint32 data, not of its shape.
    auto = jax.tree.map(lambda sh: Format(Layout.AUTO, sh), shardings)
    auto = dataclasses.replace(auto, key=shardings.key)
    jit_decode = lambda formats: jit(
        decode_fn, in_shardings=(None, formats, None), out_shardings=formats, donate_argnums=(1,)
    )
    chosen = _chosen_formats(jit_decode(auto), params, state, stop_table_EW, shardings.key)
    if chosen is None:  # fits no layout: default programs, for r1jax plan to report so
        return Programs(jit(prefill_fn), jit(decode_fn, donate_argnums=(1,)), state)
    return Programs(jit(prefill_fn, out_shardings=chosen), jit_decode(chosen), state)


def _chosen_formats(jitted_auto, params, state, stop_table_EW, key_sharding):
    """The state formats XLA picks for the decode loop compiled with ``Layout.AUTO`` (the PRNG
    key's: its sharding); None when the loop fits the device in no layout (the compiler's
    RESOURCE_EXHAUSTED)."""
    try:
        compiled = jitted_auto.lower(params, state, stop_table_EW).compile()
    except Exception as e:  # jax's JaxRuntimeError (its module moves between versions)
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return None
    return dataclasses.replace(compiled.input_formats[0][1], key=key_sharding)
