"""``SampleOutput``, what a sampler call returns (host NumPy), and the prompts' left padding.

Shape letters as in ``loop.py``: B = Q * G output rows, P prompt bucket, T ``max_new_tokens``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """Host NumPy results; rows are group-contiguous (row ``i * G + j``: sample j of prompt i).

    prompt_tokens ``[B, P]`` int32, left-padded with ``pad_id``; prompt_mask ``[B, P]`` int32.
    tokens ``[B, T]`` int32, ``pad_id`` after each row's end; mask ``[B, T]`` int32, 1 up to and
    including the stop token. logprobs ``[B, T]`` fp32: ``log_softmax(logits / temperature)`` at the
    sampled token before top-k/top-p truncation (temperature 1 for greedy), 0 after the end.
    lengths ``[B]`` int32; finish_reason ``[B]`` str, ``"stop"`` or ``"length"``;
    prompt_index ``[B]`` int32; num_steps: token columns computed per row (< T when every row
    stopped early) or, with continuous batching, decode steps of the slots (each request's
    first token came from the prefill); decode_slot_steps: continuous batching's slots x decode
    steps over its phases (this process's share), 0 for a static batch; queue_wait ``[B]``
    int32: decode steps a row waited for a slot (0 in a static batch). useful_tokens /
    slot_steps: set by partial rollouts (``RolloutPool``), whose calls also decode rows that
    are not returned: the tokens generated and the slot-steps computed for every row in flight.
    paging (a paged cache): ``store_pages`` (all pages, prompts' included, of every store),
    ``peak_pages`` (most generation pages held at once; with one store per batch shard the sum
    of the stores' peaks), ``rewound_tokens`` (decoded again after a rewind).
    routing (``Sampler(record_routing=True)``, a mixture of experts): int16 ``[B, P + T, L', K]``
    each input token's experts per MoE layer, -1 where none was routed (routing replay).
    """

    prompt_tokens: np.ndarray
    prompt_mask: np.ndarray
    tokens: np.ndarray
    logprobs: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    finish_reason: np.ndarray
    prompt_index: np.ndarray
    num_steps: int
    decode_slot_steps: int = 0
    queue_wait: np.ndarray | None = None
    useful_tokens: int | None = None
    slot_steps: int | None = None
    paging: dict[str, int] | None = None
    routing: np.ndarray | None = None

    @property
    def num_samples(self) -> int:
        return self.tokens.shape[0] // (int(self.prompt_index.max()) + 1)

    def completions(self) -> list[list[int]]:
        """Each row's generated ids, stop token included."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths, strict=True)]

    def work(self) -> dict[str, int]:
        """What the call computed and what of it was kept (this process's rows):
        ``useful_tokens`` (completion tokens returned), ``slot_steps`` (rows x decode columns
        run: a static batch computes every row at every column, finished or not; continuous
        batching, one first token per row plus ``decode_slot_steps``), ``prompt_slots`` and
        ``prompt_padding`` (the prefill's ``[B, P]`` and its padding), ``rows`` and
        ``queue_wait_steps`` (decode steps the rows waited for a slot, summed)."""
        rows = int(self.tokens.shape[0])
        if self.slot_steps is not None:
            slot_steps = self.slot_steps
        elif self.decode_slot_steps:
            slot_steps = rows + self.decode_slot_steps
        else:
            slot_steps = rows * self.num_steps
        return {
            "useful_tokens": int(
                self.lengths.sum() if self.useful_tokens is None else self.useful_tokens
            ),
            "slot_steps": slot_steps,
            "prompt_slots": int(self.prompt_mask.size),
            "prompt_padding": int(self.prompt_mask.size - self.prompt_mask.sum()),
            "rows": rows,
            "queue_wait_steps": 0 if self.queue_wait is None else int(self.queue_wait.sum()),
        }


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int):
    """Prompts -> left-padded tokens and mask ``[Q, P]`` (int32 NumPy)."""
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for i, ids in enumerate(prompts):
        if len(ids):
            tokens[i, length - len(ids) :] = ids
            mask[i, length - len(ids) :] = 1
    return tokens, mask
