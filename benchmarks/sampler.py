"""Sampler speed and memory: generated tokens/s, time to first token, peak memory.

Builds a random model of the given shape (default: the issue's tiny Qwen2 — hidden 256, 4 layers,
4 heads / 2 KV heads, vocab 1024; 8 prompts x G=8, prompt 32, 128 new tokens), samples with
temperature 1 and no stop tokens (every row generates exactly ``--new-tokens``), after one
warm-up call that compiles. ``--compare-hf`` saves the same weights as a Hugging Face checkpoint
and times ``transformers.generate`` (sampling, KV cache) on identical shapes in this process.

``--long-tail`` instead draws each row's length from a log-normal (median ``--median-tokens``,
95th percentile ``--tail-ratio`` times the median, capped at ``--new-tokens``), ends each row
there (a per-row budget, ``Sampler(row_budget=...)``: the row stops at its drawn length as if it
had sampled EOS), and times the static loop and continuous batching (``--slots``) on the same
rows in this process: ``{"static": {...}, "continuous": {...}}`` with useful tokens/s, slot
utilisation (useful tokens / slot-steps computed) and wall seconds of each.

``--page-size Z`` (with ``--long-tail``) adds the continuous sampler over a paged cache of
``--pages`` generation pages (``"paged": {...}``, with its peak pages and rewound tokens).

``--partial-batches N`` draws N such batches and decodes them one after another with continuous
batching (a call per batch: each ends with its longest row) and with partial rollouts (a pool of
two batches in flight: the next batch's rows fill the slots while a batch's tail finishes):
``{"continuous": {...}, "partial": {...}, "speedup": ...}``.

Run::

    python benchmarks/sampler.py --compare-hf
    python benchmarks/sampler.py --long-tail --prompts 32 --samples 8 --new-tokens 512 --json
    python benchmarks/sampler.py --partial-batches 4 --prompts 8 --samples 8 --slots 32 \
        --new-tokens 256 --json
    python benchmarks/sampler.py --hidden 1536 --layers 28 --heads 12 --kv-heads 2 --mlp 8960 \\
        --vocab 151936 --prompts 32 --samples 8 --prompt-len 256 --new-tokens 512 \\
        --dtype bfloat16 --peak-bw-gbs 4800 --measure-bw    # the 1.5B shape on a GPU

``--layout default|split|auto`` picks the static loop's layout (``loop.programs``; by default
the platform's, ``compile_options.default_layout``: "split" on a CPU).

With ``--peak-bw-gbs`` or ``--measure-bw`` the decode is set against the bandwidth roofline
(``decode_roofline``); ``--compare-hf`` runs ``transformers.generate`` on the GPU when torch sees
one, in ``--dtype``.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import jax
import numpy as np

from r1jax.model import ModelConfig, hf, init_params
from r1jax.sampling import Categorical, Sampler, compile_options
from r1jax.sampling.rollout_pool import RolloutPool
from r1jax.sampling.stop import stop_table


def _config(args) -> ModelConfig:
    return ModelConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        head_dim=args.head_dim or args.hidden // args.heads,
        mlp_dim=args.mlp,
        qkv_bias=True,
        tie_embeddings=True,
        param_dtype=args.dtype,
        compute_dtype=args.dtype,
        scan_unroll=args.scan_unroll,
        paged_attention=args.paged_attention,
    )


def _prompts(args) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(1, args.vocab, args.prompt_len).tolist() for _ in range(args.prompts)]


def bench_r1jax(args, config, params) -> dict:
    sampler = Sampler(
        config,
        buckets=(args.prompt_len,),
        decode_windows=args.decode_windows,
        layout=args.layout or None,
    )
    prompts, method = _prompts(args), Categorical(temperature=1.0)
    table = stop_table([])
    kw = dict(method=method, num_samples=args.samples, max_new_tokens=args.new_tokens)

    def run(seed):
        t0 = time.perf_counter()
        state, _, _ = sampler.prefill(params, prompts, rng=jax.random.key(seed), table=table, **kw)
        jax.block_until_ready(state.tokens_BT)
        t1 = time.perf_counter()
        state = sampler.decode(params, state, method=method, table=table)
        steps = int(state.step)  # blocks
        return t1 - t0, time.perf_counter() - t0, steps

    t_compile = time.perf_counter()
    run(0)
    t_compile = time.perf_counter() - t_compile
    times = [run(seed) for seed in range(1, 1 + args.repeats)]
    if args.profile:  # benchmarks/trace_summary.py reads it
        with jax.profiler.trace(args.profile, create_perfetto_trace=True):
            run(1 + args.repeats)
    ttft, total, steps = min(times, key=lambda t: t[1])
    assert steps == args.new_tokens, steps
    rows = args.prompts * args.samples
    out = dict(
        tokens_per_s=rows * args.new_tokens / total,
        ttft_s=ttft,
        total_s=total,
        first_call_s=t_compile,
    )
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    if args.peak_bw_gbs or args.measure_bw:
        out.update(decode_roofline(args, config, decode_s=total - ttft))
    return out


def decode_roofline(args, config, *, decode_s: float) -> dict:
    """Decode against the memory-bandwidth roofline.

    A decode step must read every parameter once and each row's live keys and values (prompt +
    tokens so far), so step ``t`` reads at least ``params + rows * (P + t) * kv_bytes``; the
    sum over the ``T - 1`` decode steps divided by their wall time is the bandwidth used, and
    ``rows / (mean bytes per step / peak)`` the tokens/s a kernel at peak bandwidth would reach.
    The peak is ``--peak-bw-gbs`` (the data sheet's) and, with ``--measure-bw``, a device copy
    timed in this process (what this chip delivers to XLA).
    """
    itemsize = np.dtype(config.dtype).itemsize
    rows, steps = args.prompts * args.samples, args.new_tokens - 1
    kv_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * itemsize
    live = rows * (args.prompt_len + 1 + np.arange(steps)).sum()  # tokens read, all steps
    total_bytes = config.num_params * itemsize * steps + live * kv_per_token
    step_bytes, used = total_bytes / steps, total_bytes / decode_s / 1e9
    out = dict(
        decode_tokens_per_s=rows * steps / decode_s,
        decode_step_ms=1e3 * decode_s / steps,
        min_bytes_per_step_gb=step_bytes / 1e9,
        hbm_bw_gbs=used,
    )
    peaks = {"datasheet": args.peak_bw_gbs} if args.peak_bw_gbs else {}
    if args.measure_bw:
        peaks["measured_copy"] = copy_bandwidth_gbs()
    for name, peak in peaks.items():
        out[f"peak_{name}_gbs"] = peak
        out[f"roofline_tokens_per_s_{name}"] = rows / (step_bytes / (peak * 1e9))
        out[f"pct_of_roofline_{name}"] = 100 * used / peak
    return out


def copy_bandwidth_gbs(gib: float = 4.0, repeats: int = 10) -> float:
    """Bytes read + written per second by a jitted device copy of a ``gib`` GiB array."""
    import jax.numpy as jnp

    x = jnp.ones((int(gib * 2**30) // 4,), jnp.float32)
    copy = jax.jit(lambda a: a * 1.0001)
    jax.block_until_ready(copy(x))
    t0 = time.perf_counter()
    for _ in range(repeats):
        y = copy(x)
    jax.block_until_ready(y)
    return 2 * x.nbytes * repeats / (time.perf_counter() - t0) / 1e9


def long_tail_lengths(args, rows: int = 0) -> np.ndarray:
    """Per-row lengths ``[rows]`` (default prompts x samples): log-normal with the given median
    and p95 / median, capped."""
    sigma = np.log(args.tail_ratio) / 1.6449  # the 95th percentile of N(0, 1)
    rng = np.random.default_rng(args.seed)
    rows = rows or args.prompts * args.samples
    drawn = args.median_tokens * np.exp(sigma * rng.standard_normal(rows))
    return np.clip(np.round(drawn), 1, args.new_tokens).astype(np.int32)


def bench_long_tail(args, config, params) -> dict:
    """The static loop and continuous batching on the same long-tailed rows, in turn."""
    lengths, prompts = long_tail_lengths(args), _prompts(args)
    kw = dict(num_samples=args.samples, max_new_tokens=args.new_tokens, row_budget=lengths)
    kw["method"] = Categorical(temperature=1.0)
    common = dict(buckets=(args.prompt_len,), decode_windows=args.decode_windows)
    samplers = {
        "static": Sampler(config, keys="request", **common),
        "continuous": Sampler(config, slots=args.slots, min_slots=args.min_slots, **common),
    }
    if args.page_size:  # the same slots over a paged cache
        samplers["paged"] = Sampler(
            config, slots=args.slots, page_size=args.page_size, pages=args.pages, **common
        )
    result = {
        "rows": len(lengths),
        "slots": args.slots,
        "min_slots": args.min_slots,
        "lengths": {
            "median": float(np.median(lengths)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
            "mean": float(lengths.mean()),
        },
    }
    outs = {}
    for name, sampler in samplers.items():
        sampler(params, prompts, rng=jax.random.key(0), **kw)  # compiles
        best = None
        for seed in range(1, 1 + args.repeats):
            t0 = time.perf_counter()
            out = sampler(params, prompts, rng=jax.random.key(seed), **kw)
            wall = time.perf_counter() - t0
            best = wall if best is None else min(best, wall)
        assert np.array_equal(out.lengths, lengths), "a row did not end at its drawn length"
        work, outs[name] = out.work(), out
        result[name] = {
            "useful_tokens_per_s": work["useful_tokens"] / best,
            "slot_utilisation": work["useful_tokens"] / work["slot_steps"],
            "wall_s": best,
            "decode_steps": out.num_steps,
        }
        if out.paging:
            result[name] |= out.paging
    same = np.array_equal(outs["static"].tokens, outs["continuous"].tokens)
    result["same_tokens"] = bool(same)
    result["speedup"] = (
        result["continuous"]["useful_tokens_per_s"] / result["static"]["useful_tokens_per_s"]
    )
    return result


def bench_partial(args, config, params) -> dict:
    """``--partial-batches N``: N batches of long-tailed rows (``--prompts`` x ``--samples``
    each), decoded batch after batch by continuous batching (one call each) and by a partial
    rollout pool of 2 batches in flight (``RolloutPool``), on the same rows."""
    rows = args.prompts * args.samples
    lengths = long_tail_lengths(args, rows * args.partial_batches).reshape(-1, rows)
    prompts, method = _prompts(args), Categorical(temperature=1.0)
    kw = dict(num_samples=args.samples, max_new_tokens=args.new_tokens, method=method)
    sampler = Sampler(
        config, buckets=(args.prompt_len,), slots=args.slots, decode_windows=args.decode_windows
    )
    pool = RolloutPool(
        sampler, batch_prompts=args.prompts, lanes=2 * args.prompts, prompt_length=args.prompt_len,
        key=jax.random.key(0), **kw,
    )  # fmt: skip

    def continuous():
        return [
            sampler(params, prompts, rng=jax.random.key(0), row_budget=b, **kw) for b in lengths
        ]

    def partial():
        pending, outs = list(lengths), []
        while pending or pool.batches:
            while pending and pool.wants_prompts:
                pool.admit(params, prompts, budget=pending.pop(0))
            outs.append(pool.next_batch(params).sample)
        return outs

    result = {"batches": args.partial_batches, "rows_per_batch": rows, "slots": args.slots}
    for name, run in {"continuous": continuous, "partial": partial}.items():
        run()  # compiles
        t0 = time.perf_counter()
        outs = run()
        wall = time.perf_counter() - t0
        assert np.array_equal(np.stack([o.lengths for o in outs]), lengths), name
        work = [o.work() for o in outs]
        useful = sum(w["useful_tokens"] for w in work)
        result[name] = {
            "useful_tokens_per_s": useful / wall,
            "slot_utilisation": useful / sum(w["slot_steps"] for w in work),
            "wall_s": wall,
        }
    result["speedup"] = (
        result["partial"]["useful_tokens_per_s"] / result["continuous"]["useful_tokens_per_s"]
    )
    return result


def bench_hf(args, config, params) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.torch_threads or torch.get_num_threads())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        hf.save(tmp, config, params)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).eval().to(device)
    ids = torch.tensor(_prompts(args), device=device)
    mask = torch.ones_like(ids)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None

    def run(new_tokens):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=args.samples,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                use_cache=True,
                pad_token_id=0,
                eos_token_id=None,
            )
        sync()
        elapsed = time.perf_counter() - t0
        assert out.shape == (args.prompts * args.samples, args.prompt_len + new_tokens), out.shape
        return elapsed

    run(2)  # warm-up
    total = min(run(args.new_tokens) for _ in range(args.repeats))
    ttft = min(run(1) for _ in range(args.repeats))
    rows = args.prompts * args.samples
    return dict(
        device=device,
        tokens_per_s=rows * args.new_tokens / total,
        decode_tokens_per_s=rows * (args.new_tokens - 1) / (total - ttft),
        ttft_s=ttft,
        total_s=total,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=0, help="default hidden // heads")
    parser.add_argument("--mlp", type=int, default=704)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8, help="G per prompt")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-hf", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument("--peak-bw-gbs", type=float, default=0.0, help="for %% of HBM bandwidth")
    parser.add_argument("--scan-unroll", type=int, default=1, help="model.scan_unroll")
    parser.add_argument(
        "--paged-attention", default="auto", choices=["auto", "kernel", "gather"],
        help="model.paged_attention: the paged cache's decode attention",
    )  # fmt: skip
    parser.add_argument("--measure-bw", action="store_true", help="time a device copy's GB/s")
    parser.add_argument("--long-tail", action="store_true", help="static vs continuous batching")
    parser.add_argument("--slots", type=int, default=64, help="continuous batching's slots")
    parser.add_argument("--min-slots", type=int, default=0, help="shrink the tail's batch to")
    parser.add_argument("--median-tokens", type=int, default=32)
    parser.add_argument("--tail-ratio", type=float, default=8.0, help="p95 / median of lengths")
    parser.add_argument("--seed", type=int, default=0, help="of the drawn lengths")
    parser.add_argument("--json", action="store_true", help="print one line of JSON")
    parser.add_argument("--page-size", type=int, default=0, help="--long-tail: also paged")
    parser.add_argument("--pages", type=int, default=0, help="generation pages (0: all)")
    parser.add_argument("--partial-batches", type=int, default=0, help="continuous vs partial")
    parser.add_argument(
        "--decode-windows", type=int, default=4, help="cache prefixes attention reads"
    )
    parser.add_argument(
        "--layout", default="", help="static loop's (loop.programs); '': the platform's"
    )
    parser.add_argument("--profile", default="", help="trace one more call into this dir")
    parser.add_argument("--gpu-options", default="", help="JSON: replaces GPU_DECODE_OPTIONS")
    args = parser.parse_args(argv)
    if args.gpu_options:  # e.g. '{}': the sampler's programs without its GPU options
        compile_options.GPU_DECODE_OPTIONS = json.loads(args.gpu_options)

    config = _config(args)
    params = init_params(config, jax.random.key(0))
    if args.long_tail or args.partial_batches:
        bench = bench_partial if args.partial_batches else bench_long_tail
        result = bench(args, config, params)
        print(json.dumps(result, indent=None if args.json else 2))
        return result
    result = {"device": str(jax.devices()[0].device_kind), "config": config.to_dict()}
    result["r1jax"] = bench_r1jax(args, config, params)
    if args.compare_hf:
        result["transformers"] = bench_hf(args, config, params)
        result["speedup"] = result["r1jax"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    result["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shown = {k: v for k, v in result.items() if k != "config"}
    print(json.dumps(shown, indent=None if args.json else 2))
    return result


if __name__ == "__main__":
    from r1jax import host_malloc

    host_malloc.ensure()  # huge-page malloc for XLA:CPU (R1JAX_HOST_MALLOC=0: off)
    main()
