"""Stop conditions: stop token ids, and stop strings matched as token-id sequences on device.

A stop string can tokenise differently in context (``"</answer>"`` may be one special token, or
``"</", "answer", ">"`` pieces, with or without a leading-space piece). We handle it in two layers:

1. **On device, no host round-trip**: every tokenisation we can enumerate is compiled into a table
   of token-id sequences ``[E, W]`` (right-aligned, ``-1`` = wildcard): the single vocabulary
   token spelling the string when there is one (``token_to_id``; in our sentencepiece tokenizers
   ``</answer>`` is one special token) and ``tokenizer.encode(string)``. The decode loop keeps the
   last ``W`` generated tokens per row and stops a row as soon as one sequence matches.
2. **On the host, after the loop** (:func:`truncate_at_stop_strings`): each completion is decoded
   and, if the text contains a stop string the device table missed (an unusual tokenisation), the
   row is cut after the first token whose decoded prefix contains it. Such a row only ran longer
   than needed; what is returned is exactly as if it had stopped there.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.data.tokenizer import Tokenizer

WILDCARD = -1


def stop_sequences(
    stop_token_ids: Sequence[int],
    stop_strings: Sequence[str],
    tokenizer: Tokenizer | None,
) -> list[tuple[int, ...]]:
    """All token-id sequences that end a row (deduplicated, in a stable order)."""
    seqs: list[tuple[int, ...]] = [(int(t),) for t in stop_token_ids]
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer (pass tokenizer=...)")
    for text in stop_strings:
        if not text:
            raise ValueError("stop_strings: empty string")
        single = tokenizer.token_to_id(text)
        if single is not None:
            seqs.append((int(single),))
        ids = tuple(int(i) for i in tokenizer.encode(text))
        if ids:
            seqs.append(ids)
    return list(dict.fromkeys(seqs))


def stop_table(seqs: Sequence[Sequence[int]]) -> np.ndarray:
    """Right-aligned int32 ``[E, W]`` table, ``WILDCARD``-padded on the left.

    E and W are rounded up (to multiples of 4, and to powers of two >= 4) so that small changes
    to the stop set reuse the compiled loop. Wildcard-only rows match nothing (see ``matches``).
    """
    n = max(4, -(-len(seqs) // 4) * 4)
    longest = max((len(s) for s in seqs), default=1)
    width = max(4, 1 << (longest - 1).bit_length())
    table = np.full((n, width), WILDCARD, np.int32)
    for i, seq in enumerate(seqs):
        table[i, width - len(seq) :] = seq
    return table


def matches(recent_BW: jax.Array, table_EW: jax.Array) -> jax.Array:
    """Bool ``[B]``: the last ``W`` generated tokens of a row end with one of the sequences.

    ``recent_BW`` holds the most recent token in its last column and ``-1`` where fewer than W
    tokens have been generated (never equal to a real token, so no match spans the prompt).
    """
    real_EW = table_EW != WILDCARD
    equal_BEW = recent_BW[:, None, :] == table_EW[None]
    hit_BE = jnp.all(equal_BEW | ~real_EW[None], axis=-1) & jnp.any(real_EW, axis=-1)[None]
    return jnp.any(hit_BE, axis=-1)


def first_match_end(tokens: Sequence[int], texts_contain, num_tokens: int) -> int | None:
    """Smallest k <= num_tokens with ``texts_contain(tokens[:k])`` true (binary search)."""
    if num_tokens == 0 or not texts_contain(tokens[:num_tokens]):
        return None
    lo, hi = 1, num_tokens
    while lo < hi:
        mid = (lo + hi) // 2
        if texts_contain(tokens[:mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo


def truncate_at_stop_strings(
    tokens_BT: np.ndarray,
    lengths_B: np.ndarray,
    stop_strings: Sequence[str],
    tokenizer: Tokenizer,
) -> np.ndarray:
    """New lengths ``[B]``: each row cut after the first token where a stop string appears in
    the decoded text (``decode(..., skip_special=False)``), or unchanged."""
    return stop_string_matches(tokens_BT, lengths_B, stop_strings, tokenizer)[0]


def stop_string_matches(
    tokens_BT: np.ndarray,
    lengths_B: np.ndarray,
    stop_strings: Sequence[str],
    tokenizer: Tokenizer,
) -> tuple[np.ndarray, np.ndarray]:
    """``truncate_at_stop_strings``'s lengths and bool ``[B]``: whether a row holds a stop
    string (its last token included: a row that ends on one stopped, it was not cut short)."""
    new_lengths, found = lengths_B.copy(), np.zeros(len(lengths_B), bool)
    if not stop_strings:
        return new_lengths, found

    def contains(ids) -> bool:
        text = tokenizer.decode(list(ids), skip_special=False)
        return any(s in text for s in stop_strings)

    for row in range(tokens_BT.shape[0]):
        end = first_match_end(tokens_BT[row], contains, int(lengths_B[row]))
        if end is not None:
            new_lengths[row], found[row] = end, True
    return new_lengths, found
