"""``Sampler`` (compiled functions cached per bucket) and the ``generate`` convenience function.

Shape letters as in ``loop.py``: B = Q * G output rows, P prompt bucket, T ``max_new_tokens``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import multihost
from r1jax.data.batching import SAMPLER_BUCKETS, bucket_length
from r1jax.model import ModelConfig
from r1jax.sampling import compile_options, continuous, loop, paged, paged_shards
from r1jax.sampling.methods import SamplingMethod, make_method
from r1jax.sampling.output import SampleOutput, left_pad
from r1jax.sampling.stop import stop_sequences, stop_string_matches, stop_table
from r1jax.sharding import named_sharding


class Sampler:
    """Samples from a model; its jitted prefill/decode compile once per (bucket, batch, method,
    ``max_new_tokens``, G) and are reused across calls.

    With a ``mesh``, rows are split over the data axes and heads over ``tensor`` (params must
    already carry their shardings, e.g. from ``init_params(..., mesh=mesh)``); the samples equal
    the unsharded run's for the same key. On a mesh spanning several processes (a pod), every
    process calls the sampler in step with the same ``rng`` and ITS prompts (the same number on
    each), and gets back the rows of its prompts.

    ``slots`` > 0 decodes with continuous batching (``continuous.py``): that many decode slots
    take the Q * G requests from a queue, so rows that stop early free their slot for the next
    request; with ``min_slots`` the loop halves its slots once the queue is empty and at most
    half are busy, down to ``min_slots``, so a long tail decodes in a small batch.
    ``page_size`` > 0 pages that cache (``paged.py``): ``pages`` pages of that many tokens for
    the generated tokens (0: enough for every slot to reach ``max_new_tokens``; fewer makes slots
    wait or rewind when they run short, with the same rows), shared prompt pages per group; on a
    mesh one store per batch shard (``paged_shards``), each with ``pages // D`` of them.
    ``keys``: "step" (one key per step for the whole batch) or "request" (each row's own keys;
    its tokens then do not depend on the batch); continuous batching needs "request", the
    default then. Both give the same rows for the same ``rng`` and "request" keys (to fp32
    rounding: ``decode_windows`` > 1 sums attention over cache prefixes, in another order,
    ``windows.py``; ``decode_windows=1`` reads the whole cache: bit for bit). ``layout``: the
    static loop's (``loop.programs``: "default", "split" or "auto"; None: ``default_layout``).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        *,
        mesh=None,
        buckets: Sequence[int] = SAMPLER_BUCKETS,
        pad_id: int = 0,
        layout: str | None = None,
        slots: int = 0,
        min_slots: int = 0,
        keys: str | None = None,
        decode_windows: int = loop.DECODE_WINDOWS,
        page_size: int = 0,
        pages: int = 0,
        record_routing: bool = False,
    ):
        self.config, self.mesh, self.pad_id = model_config, mesh, int(pad_id)
        self.record_routing = bool(record_routing)
        if self.record_routing and (model_config.moe is None or slots):
            raise ValueError(
                "Sampler: record_routing needs a mixture-of-experts model and the static loop "
                f"(slots=0; got slots={slots}, moe={model_config.moe is not None})"
            )
        self.buckets = tuple(sorted(int(b) for b in buckets))
        self.layout = layout  # the decode loop's (``loop.programs``; None: by platform)
        self.slots, self.min_slots = int(slots), int(min_slots)
        self.decode_windows = int(decode_windows)  # attention's cache prefixes (``windows.py``)
        if self.slots:
            continuous.slot_phases(self.slots, self.min_slots)  # validates
        self.keys = keys or ("request" if self.slots else "step")
        if self.slots < 0 or self.keys not in loop.KEY_SCHEMES:
            raise ValueError(f"Sampler: slots={slots} (>= 0), keys={keys!r} {loop.KEY_SCHEMES}")
        if self.slots and self.keys != "request":
            raise ValueError("Sampler: continuous batching (slots > 0) needs keys='request'")
        self.page_size, self.pages = int(page_size), int(pages)
        if self.page_size and (not self.slots or self.min_slots or self.page_size < 1):
            raise ValueError(
                f"Sampler: page_size={page_size} pages the continuous sampler's cache: needs "
                f"slots > 0 and min_slots=0 (got {slots}, {min_slots})"
            )
        self._continuous: dict[tuple, Callable] = {}  # jitted continuous.sample by statics
        self._programs: dict[tuple, loop.Programs] = {}  # by the prefill's shapes and statics
        self._decoders: dict[tuple, loop.Programs] = {}  # the same, by the state's shapes

    def compile_counts(self) -> tuple[int, int]:
        """How many programs the prefill and the decode loop have compiled so far (continuous
        batching compiles the two as one program, counted in both)."""
        pairs = self._programs.values()
        both = sum(fn._cache_size() for fn in self._continuous.values())
        prefills = sum(p.prefill._cache_size() for p in pairs)
        return prefills + both, sum(p.decode._cache_size() for p in pairs) + both

    def _pair(self, params, tokens, mask, rng, table, **static) -> loop.Programs:
        key = (tokens.shape, table.shape, *sorted(static.items()))
        if key not in self._programs:
            pair = loop.programs(
                params,
                tokens,
                mask,
                rng,
                table,
                config=self.config,
                pad_id=self.pad_id,
                mesh=self.mesh,
                layout=self.layout,
                keys=self.keys,
                windows=self.decode_windows,
                record_routing=self.record_routing,
                **static,
            )
            self._programs[key] = self._decoders[_state_key(pair.state, static["method"])] = pair
        return self._programs[key]

    @functools.cached_property
    def multi_process(self) -> bool:
        """True when the mesh spans several processes: each passes its own prompts (its rows of
        the global batch, ``r1jax.multihost.data_shard(mesh).rows``) and gets its own rows."""
        if self.mesh is None:
            return False
        return any(d.process_index != jax.process_index() for d in self.mesh.devices.flat)

    def mesh_context(self):
        """``jax.set_mesh(mesh)`` for the sampler's programs (nothing without a mesh)."""
        return jax.set_mesh(self.mesh) if self.mesh is not None else _nullcontext()

    def put(self, x: np.ndarray, logical):
        """A host array on the sampler's mesh, split by ``logical`` axis names (a pod: this
        process's rows of the global array)."""
        if self.mesh is None:
            return jnp.asarray(x)
        if self.multi_process and logical[0] == "batch":
            return multihost.host_local_to_global(x, self.mesh, logical)
        return jax.device_put(x, named_sharding(self.mesh, logical, x.shape))

    def _bucket(self, prompts) -> int:
        """The prompt bucket; across processes the one of the longest prompt anywhere (every
        process must run the same program)."""
        longest = max(len(p) for p in prompts)
        if self.multi_process:
            longest = int(multihost.gather_rows(np.asarray([longest], np.int32)).max())
        return bucket_length(longest, self.buckets, extend=True)

    def _inputs(self, prompts, num_samples: int, max_new_tokens: int, budget):
        """Left-padded, bucketed prompts ``[Q, P]`` (host) and the device arguments
        ``(tokens, mask)`` and ``budget_B`` (each row's new-token limit)."""
        if not len(prompts) or any(len(p) == 0 for p in prompts):
            raise ValueError("prompts: need at least one prompt and no empty prompt")
        rows = len(prompts) * num_samples
        budget = np.full(rows, max_new_tokens) if budget is None else np.asarray(budget)
        if budget.shape != (rows,) or budget.min() < 1:
            raise ValueError(f"row_budget: {rows} values >= 1 (Q * G rows), got {budget.shape}")
        longest = max(range(len(prompts)), key=lambda i: len(prompts[i]))
        reach = len(prompts[longest]) + max_new_tokens
        if reach > self.config.max_position_embeddings:
            raise ValueError(
                f"prompt {longest} has {len(prompts[longest])} tokens: with max_new_tokens="
                f"{max_new_tokens} its rows reach position {reach}, past the model's "
                f"max_position_embeddings={self.config.max_position_embeddings}; shorten the "
                "prompt or lower max_new_tokens"
            )
        tokens_QP, mask_QP = left_pad(prompts, self._bucket(prompts), self.pad_id)
        args = (self.put(tokens_QP, ("batch", None)), self.put(mask_QP, ("batch", None)))
        return tokens_QP, mask_QP, args, self.put(budget.astype(np.int32), ("batch",))

    def prefill(
        self, params, prompts, *, rng, method, num_samples, max_new_tokens, table, budget=None
    ):
        """Pads/buckets ``prompts`` and runs the prefill; returns ``(state, tokens, mask)``."""
        tokens_QP, mask_QP, args, budget_B = self._inputs(
            prompts, num_samples, max_new_tokens, budget
        )
        table = self.put(table, (None, None))
        static = dict(method=method, num_samples=num_samples, max_new_tokens=max_new_tokens)
        with self.mesh_context():
            state = self._pair(params, *args, rng, table, **static).prefill(
                params, *args, rng, table, budget_B=budget_B
            )
        return state, tokens_QP, mask_QP

    def decode(self, params, state, *, method, table):
        """Runs the decode loop (donating ``state``) and returns the final state."""
        decode = self._decoders[_state_key(state, method)].decode
        with self.mesh_context():
            return decode(params, state, self.put(table, (None, None)))

    def __call__(
        self,
        params,
        prompts: Sequence[Sequence[int]],
        *,
        rng: jax.Array,
        num_samples: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        greedy: bool = False,
        method: SamplingMethod | None = None,
        stop_token_ids: Sequence[int] = (),
        stop_strings: Sequence[str] = (),
        tokenizer=None,
        row_budget: Sequence[int] | None = None,
    ) -> SampleOutput:
        """Samples ``num_samples`` completions per prompt; see ``generate``. ``row_budget``:
        optional per-row limits on new tokens ``[Q * G]`` (a row reaching its limit ends as
        "length"; ``max_new_tokens`` stays the shape and the cap)."""
        if method is None:
            method = make_method(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p)
        if max_new_tokens < 1 or num_samples < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}, num_samples={num_samples}: >= 1")
        prompts = [[int(t) for t in p] for p in prompts]
        table = stop_table(stop_sequences(stop_token_ids, stop_strings, tokenizer))
        if self.slots:
            state, tokens_QP, mask_QP = self._continuous_sample(
                params, prompts, rng, method, num_samples, max_new_tokens, table, row_budget
            )
            fields = (state.tokens_RT, state.logprobs_RT, state.lengths_R, state.done_R)
            fields += (state.wait_R,)
            finish = (tokens_QP, mask_QP, num_samples, stop_strings, tokenizer)
            counters = (state.iterations, state.slot_steps)
            out = self.to_output(fields, counters, *finish)
            if not self.page_size:
                return out
            scalar = lambda x: x if isinstance(x, int) else int(np.asarray(x.addressable_data(0)))
            paging = {k: scalar(v) for k, v in paged_shards.paging_stats(state.cache).items()}
            return dataclasses.replace(out, paging=paging)
        state, tokens_QP, mask_QP = self.prefill(
            params,
            prompts,
            rng=rng,
            method=method,
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            table=table,
            budget=row_budget,
        )
        state = self.decode(params, state, method=method, table=table)
        fields = (state.tokens_BT, state.logprobs_BT, state.lengths_B, state.done_B)
        finish = (tokens_QP, mask_QP, num_samples, stop_strings, tokenizer)
        out = self.to_output(fields, (state.step, None), *finish)
        return self._with_routing(out, state) if self.record_routing else out

    def _with_routing(self, out: SampleOutput, state) -> SampleOutput:
        """``out`` with the recorded experts (``record_routing``) as host rows."""
        experts_BSLK = jnp.moveaxis(state.experts_LBSK, 0, 2)  # rows first, as every field
        if self.multi_process:
            experts_BSLK = multihost.data_shard_rows(experts_BSLK, self.mesh)
        return dataclasses.replace(out, routing=np.asarray(jax.device_get(experts_BSLK)))

    def _continuous_sample(self, params, prompts, rng, method, num_samples, max_new, table, budget):
        """Continuous batching (``continuous.sample``); returns ``(state, tokens, mask)``."""
        tokens_QP, mask_QP, args, budget_R = self._inputs(prompts, num_samples, max_new, budget)
        static = dict(method=method, num_samples=num_samples, max_new_tokens=max_new)
        key = (*sorted(static.items()),)
        if key not in self._continuous:
            common = dict(config=self.config, num_slots=self.slots, pad_id=self.pad_id, **static)
            common["windows"] = self.decode_windows
            if self.page_size:
                fn = functools.partial(
                    paged_shards.sample,
                    mesh=self.mesh,
                    page_size=self.page_size,
                    gen_pages=self.gen_pages(tokens_QP.shape[1], max_new),
                    **common,
                )
            else:
                fn = functools.partial(
                    continuous.sample, min_slots=self.min_slots, mesh=self.mesh, **common
                )
            self._continuous[key] = jax.jit(fn, compiler_options=self.compiler_options())
        with self.mesh_context():
            table = self.put(table, (None, None))
            state = self._continuous[key](params, *args, rng, table, budget_R=budget_R)
        return state, tokens_QP, mask_QP

    def compiler_options(self) -> dict:
        """XLA options of this sampler's programs (``compile_options`` of its devices)."""
        platform = self.mesh.devices.flat[0].platform if self.mesh is not None else None
        return compile_options.compiler_options(platform)

    def gen_pages(self, prompt_len: int, max_new: int) -> int:
        """Generation pages of a paged call: ``pages``, or every slot's full reach."""
        paged.page_counts(prompt_len, max_new, self.page_size)  # Z divides the bucket
        one = paged.request_pages(max_new, self.page_size)
        if self.pages and self.pages < one:
            raise ValueError(
                f"Sampler: pages={self.pages} cannot hold one request of {max_new} new tokens "
                f"({one} pages of {self.page_size}: its tokens, a copy of its prompt's last)"
            )
        return self.pages or self.slots * one

    def to_output(self, fields, counters, tokens_QP, mask_QP, num_samples, stop_strings, tokenizer):
        """Host ``SampleOutput`` from the device's per-row ``(tokens, logprobs, lengths, done)``
        and ``counters``: the step count and continuous batching's slot-steps (or None)."""
        global_rows = fields[0].shape[0]
        if self.multi_process:  # this process's rows only (the rest live on other hosts)
            rows = lambda x: multihost.data_shard_rows(x, self.mesh)
            tokens, logprobs, lengths, done, *wait = map(rows, fields)
            scalar = lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x
            steps, slot_steps = map(scalar, counters)
        else:
            host, (steps, slot_steps) = jax.device_get((fields, counters))
            tokens, logprobs, lengths, done, *wait = host
        lengths, done = lengths.astype(np.int32), done.copy()
        if stop_strings:
            lengths, found = stop_string_matches(tokens, lengths, stop_strings, tokenizer)
            done |= found  # a match ending on the last allowed token stopped too
        mask = (np.arange(tokens.shape[1])[None] < lengths[:, None]).astype(np.int32)
        return SampleOutput(
            prompt_tokens=np.repeat(tokens_QP, num_samples, axis=0),
            prompt_mask=np.repeat(mask_QP, num_samples, axis=0),
            tokens=np.where(mask == 1, tokens, self.pad_id).astype(np.int32),
            logprobs=np.where(mask == 1, logprobs, 0.0).astype(np.float32),
            mask=mask,
            lengths=lengths,
            finish_reason=np.where(done, "stop", "length"),
            prompt_index=np.repeat(np.arange(len(tokens_QP), dtype=np.int32), num_samples),
            num_steps=int(steps),
            # this process's share of the slot-steps (each process has as many rows)
            decode_slot_steps=int(slot_steps or 0) * len(tokens) // global_rows,
            queue_wait=np.asarray(wait[0], np.int32) if wait else None,
        )


def _state_key(state, method) -> tuple:
    """What selects a decode program: the shapes of the state's leaves and the method."""
    return (*(x.shape for x in jax.tree.leaves(state)), method)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@functools.lru_cache(maxsize=8)
def _shared_sampler(config: ModelConfig, mesh, buckets: tuple[int, ...], pad_id: int) -> Sampler:
    return Sampler(config, mesh=mesh, buckets=buckets, pad_id=pad_id)


def get_sampler(
    model_config: ModelConfig, *, mesh=None, buckets: Sequence[int] = SAMPLER_BUCKETS, pad_id=0
) -> Sampler:
    """The ``Sampler`` that ``generate`` uses for these arguments (one per combination)."""
    return _shared_sampler(model_config, mesh, tuple(int(b) for b in buckets), int(pad_id))


def generate(
    params,
    model_config: ModelConfig,
    prompts: Sequence[Sequence[int]],
    *,
    rng: jax.Array,
    num_samples: int = 1,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    stop_token_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    pad_id: int = 0,
    mesh=None,
    buckets: Sequence[int] = SAMPLER_BUCKETS,
) -> SampleOutput:
    """Samples ``num_samples`` (G) completions for each of the Q prompts (token-id lists of any
    lengths; left-padded and bucketed here). Returns Q * G group-contiguous rows.

    Compiled programs are shared between calls with the same ``(model_config, mesh, buckets,
    pad_id)`` through a small cache of ``Sampler`` objects.
    """
    sampler = get_sampler(model_config, mesh=mesh, buckets=buckets, pad_id=pad_id)
    return sampler(
        params,
        prompts,
        rng=rng,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        stop_token_ids=stop_token_ids,
        stop_strings=stop_strings,
        tokenizer=tokenizer,
    )
