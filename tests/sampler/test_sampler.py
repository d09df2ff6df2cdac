"""Sampler vs independent references: greedy == argmax of full forwards, log-probs == full
forward recompute, stop tokens/strings, B prompts -> B*G rows, no recompile per bucket."""

import jax
import numpy as np
import pytest
from sampler_common import (
    BUCKETS,
    CONFIG,
    MAX_NEW,
    PROMPTS,
    CharTokenizer,
    full_logits,
    layout,
    reference_greedy,
)

from r1jax.sampling import Sampler, compile_options, generate, loop, truncate_at_stop_strings
from r1jax.sampling.stop import stop_string_matches


@pytest.fixture(scope="module")
def greedy_ref(params):
    return reference_greedy(params, PROMPTS, MAX_NEW)


@pytest.fixture(scope="module")
def greedy_out(sampler, params):
    return sampler(params, PROMPTS, rng=jax.random.key(0), max_new_tokens=MAX_NEW, greedy=True)


@pytest.fixture(scope="module")
def sampled(sampler, params):
    """G=2 samples per prompt with temperature and top-k/top-p truncation on."""
    return sampler(
        params,
        PROMPTS,
        rng=jax.random.key(3),
        num_samples=2,
        max_new_tokens=MAX_NEW,
        temperature=0.7,
        top_k=10,
        top_p=0.9,
    )


def test_greedy_equals_argmax_of_repeated_full_forwards(greedy_ref, greedy_out):
    np.testing.assert_array_equal(greedy_out.tokens, greedy_ref)
    assert np.all(greedy_out.lengths == MAX_NEW)
    assert list(greedy_out.finish_reason) == ["length"] * 3


def test_logprobs_equal_full_forward_recompute_before_truncation(params, sampled):
    tokens, mask, start = layout(PROMPTS, sampled.completions(), num_samples=2)
    logits = np.asarray(full_logits(params, tokens, mask))[:, start - 1 : start - 1 + MAX_NEW]
    scaled = logits / 0.7
    logp = np.asarray(jax.nn.log_softmax(scaled, axis=-1))
    picked = np.take_along_axis(logp, sampled.tokens[..., None], axis=-1)[..., 0]
    valid = sampled.mask == 1
    assert valid.all()  # no stop condition: every row runs to max_new_tokens
    np.testing.assert_allclose(sampled.logprobs, picked, atol=1e-4)
    # Truncation was applied to the draw: every token is within the top 10 of its step.
    rank = (scaled > np.take_along_axis(scaled, sampled.tokens[..., None], axis=-1)).sum(-1)
    assert rank.max() < 10
    # ... and not to the log-prob (a renormalised log-prob would be larger).
    assert np.all(sampled.logprobs <= 0) and np.any(picked < np.log(0.9) - 1e-3)


def test_a_list_of_p_prompts_gives_p_times_g_group_contiguous_rows(sampled):
    rows = len(PROMPTS) * 2
    assert sampled.tokens.shape == sampled.logprobs.shape == sampled.mask.shape == (rows, MAX_NEW)
    assert sampled.lengths.shape == sampled.finish_reason.shape == (rows,)
    np.testing.assert_array_equal(sampled.prompt_index, [0, 0, 1, 1, 2, 2])
    for r in range(rows):
        prompt = sampled.prompt_tokens[r][sampled.prompt_mask[r] == 1]
        np.testing.assert_array_equal(prompt, PROMPTS[sampled.prompt_index[r]])
    assert sampled.num_samples == 2
    assert any((sampled.tokens[2 * i] != sampled.tokens[2 * i + 1]).any() for i in range(3))


def _first(row, pred):
    hits = [t for t in range(len(row)) if pred(t)]
    return hits[0] if hits else None


def _check_cut(out, ref_BN, ends):
    """Row b equals the reference up to ``ends[b]`` (inclusive), nothing counted after."""
    for b, end in enumerate(ends):
        n = MAX_NEW if end is None else end + 1
        assert out.lengths[b] == n
        assert out.finish_reason[b] == ("length" if end is None else "stop")
        np.testing.assert_array_equal(out.tokens[b, :n], ref_BN[b, :n])
        assert np.all(out.tokens[b, n:] == 0)
        np.testing.assert_array_equal(out.mask[b], np.arange(MAX_NEW) < n)
        assert np.all(out.logprobs[b, n:] == 0) and np.all(out.logprobs[b, :n] < 0)


def test_stop_token_ends_a_row_and_is_counted(sampler, params, greedy_ref):
    stop = int(greedy_ref[0, 3])
    out = sampler(
        params,
        PROMPTS,
        rng=jax.random.key(0),
        max_new_tokens=MAX_NEW,
        greedy=True,
        stop_token_ids=[stop],
    )
    _check_cut(out, greedy_ref, [_first(r, lambda t, r=r: r[t] == stop) for r in greedy_ref])


def test_loop_exits_early_when_every_row_has_stopped(sampler, params, greedy_ref):
    stops = sorted({int(t) for t in greedy_ref[:, 2]})
    out = sampler(
        params,
        PROMPTS,
        rng=jax.random.key(0),
        max_new_tokens=MAX_NEW,
        greedy=True,
        stop_token_ids=stops,
    )
    ends = [_first(r, lambda t, r=r: int(r[t]) in stops) for r in greedy_ref]
    _check_cut(out, greedy_ref, ends)
    assert out.num_steps == max(ends) + 1 < MAX_NEW
    # the static batch computes every row at every column until the last row stops
    work = out.work()
    assert work["useful_tokens"] == sum(e + 1 for e in ends) == out.mask.sum()
    assert work["slot_steps"] == len(greedy_ref) * (max(ends) + 1)
    lengths = [len(p) for p in PROMPTS]
    assert work["prompt_slots"] == out.prompt_mask.size
    assert work["prompt_padding"] == out.prompt_mask.size - sum(lengths) * out.num_samples


def test_stop_string_matched_on_device_as_a_token_sequence(sampler, params, greedy_ref):
    tok = CharTokenizer()
    text = tok.decode(greedy_ref[1, 3:5])  # two tokens: needs the multi-token match
    out = sampler(
        params,
        PROMPTS,
        rng=jax.random.key(0),
        max_new_tokens=MAX_NEW,
        greedy=True,
        stop_strings=[text],
        tokenizer=tok,
    )
    pair = list(greedy_ref[1, 3:5])
    ends = [_first(r, lambda t, r=r: t >= 1 and list(r[t - 1 : t + 1]) == pair) for r in greedy_ref]
    assert ends[1] is not None and ends[1] <= 4
    _check_cut(out, greedy_ref, ends)


class _OddTokenizer(CharTokenizer):
    """Tokenises the stop string into ids the model never emits for it, so only the host-side
    text check can find it (a stop string that tokenises differently in context)."""

    def encode(self, text, add_bos=False):
        return [62, 62] if len(text) == 2 else super().encode(text)


def test_stop_string_with_other_tokenisation_is_cut_on_the_host(sampler, params, greedy_ref):
    assert not any(list(r[t : t + 2]) == [62, 62] for r in greedy_ref for t in range(MAX_NEW))
    tok = _OddTokenizer()
    text = tok.decode(greedy_ref[2, 4:6])
    out = sampler(
        params,
        PROMPTS,
        rng=jax.random.key(0),
        max_new_tokens=MAX_NEW,
        greedy=True,
        stop_strings=[text],
        tokenizer=tok,
    )
    ends = [_first(r, lambda t, r=r: tok.decode(r[: t + 1]).find(text) >= 0) for r in greedy_ref]
    assert ends[2] is not None
    _check_cut(out, greedy_ref, ends)


def test_truncate_at_stop_strings_finds_the_first_token_completing_the_text():
    class Pieces:
        table = {1: "ab", 2: "</ans", 3: "wer>", 4: "x"}

        def decode(self, ids, skip_special=True):
            return "".join(self.table[int(i)] for i in ids)

    tokens = np.array([[1, 2, 3, 4, 4], [4, 4, 1, 0, 0], [2, 3, 2, 3, 4]])
    lengths = np.array([5, 3, 5])
    got = truncate_at_stop_strings(tokens, lengths, ["</answer>"], Pieces())
    np.testing.assert_array_equal(got, [3, 3, 2])
    # a row whose stop string ends on its last allowed token stopped (it read as truncated)
    tokens = np.array([[4, 4, 2, 3], [4, 4, 4, 4]])
    cut, found = stop_string_matches(tokens, np.array([4, 4]), ["</answer>"], Pieces())
    np.testing.assert_array_equal(cut, [4, 4])
    np.testing.assert_array_equal(found, [True, False])


def test_no_recompile_across_calls_in_the_same_bucket(sampler, params, greedy_out):
    """Same bucket (prompts of 1..8 tokens), batch, method and N: the compiled programs are
    reused, also through ``generate`` (which shares this sampler); a longer prompt compiles once
    for the next bucket."""
    before = sampler.compile_counts()
    kw = dict(max_new_tokens=MAX_NEW, greedy=True)
    again = sampler(params, PROMPTS, rng=jax.random.key(5), **kw)
    np.testing.assert_array_equal(again.tokens, greedy_out.tokens)
    other = [[9] * 8, [10], [11, 12, 13]]
    sampler(params, other, rng=jax.random.key(6), stop_token_ids=[3, 4], **kw)
    b = generate(
        params, CONFIG, [p[::-1] for p in PROMPTS], rng=jax.random.key(0), buckets=BUCKETS, **kw
    )
    assert not np.array_equal(b.tokens, greedy_out.tokens)
    assert sampler.compile_counts() == before
    sampler(params, [[1] * 12, [2], [3]], rng=jax.random.key(7), **kw)  # bucket 16
    assert sampler.compile_counts() == (before[0] + 1, before[1] + 1)


def test_bad_prompts_are_rejected(sampler, params):
    with pytest.raises(ValueError, match="empty"):
        sampler(params, [[1], []], rng=jax.random.key(0), max_new_tokens=2)


def test_a_prompt_reaching_past_the_model_positions_is_named(sampler, params):
    limit = CONFIG.max_position_embeddings
    with pytest.raises(ValueError, match=r"prompt 1 has 9 tokens: with max_new_tokens=\d+"):
        sampler(params, [[1], [2] * 9], rng=jax.random.key(0), max_new_tokens=limit - 8)


def test_decode_phases_over_cache_prefixes_sample_what_the_whole_cache_gives(params):
    """``decode_windows``: the loop's phases attend over the prompt + 1/4, 1/2, ... of the new
    tokens (rounded up to 8 slots here, 128 at real lengths); rows as with the whole cache."""
    assert loop.decode_windows(8, 40, 4) == (24, 32, 40, 48)
    assert loop.decode_windows(512, 32256, 4) == (8576, 16640, 24704, 32768)
    assert loop.decode_windows(8, 8, 4) == (16,)
    kw = dict(rng=jax.random.key(2), num_samples=2, max_new_tokens=40, temperature=0.8)
    whole = Sampler(CONFIG, buckets=BUCKETS, decode_windows=1)(params, PROMPTS, **kw)
    phased = Sampler(CONFIG, buckets=BUCKETS, decode_windows=4)(params, PROMPTS, **kw)
    np.testing.assert_array_equal(phased.tokens, whole.tokens)
    np.testing.assert_allclose(phased.logprobs, whole.logprobs, rtol=1e-5, atol=1e-6)


def test_gpu_compiler_options_are_xla_options_and_only_gpus_get_them():
    """The sampler's GPU options (no dot merger, cuBLAS GEMMs: docs/sampler.md's H200 figures)
    name real XLA options (a misspelt one fails the compile) and reach no other platform."""
    assert compile_options.compiler_options("gpu") == compile_options.GPU_DECODE_OPTIONS
    assert (
        compile_options.compiler_options("tpu") == {}
        and compile_options.compiler_options("cpu") == {}
    )
    options = compile_options.compiler_options("gpu")
    x = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    program = jax.jit(lambda a: (a @ a.T, a @ a.T * 2), compiler_options=options)
    np.testing.assert_allclose(program(x)[1], 2 * x @ x.T)
