"""A teacher's top-k next-token distribution over SFT data, stored with each record (the
input of ``distill.teacher="topk"``; the format is ``r1jax.data.teacher_topk``'s).

    r1jax teacher-topk --config.model_from=runs/teacher --config.data.path=traces.jsonl \\
        --config.distill.top_k=32 --config.output=traces_topk.jsonl

Each record is tokenised as SFT tokenises it (R1-Zero template, completion, EOS; the
``config.data`` source and tokenizer, ``train.seq_len`` the length limit: longer records are
skipped and counted); ``train.batch_size`` records at a time run through the teacher in one
jitted call on the mesh, its logits made ``logits_chunk`` positions at a time (never
``[B, T, V]``), and the top ``distill.top_k`` entries of softmax(logits / ``distill.temperature``)
at every position are written next to the record. A file source is read once in order; a
built-in task gives ``train.steps x train.batch_size`` examples drawn with ``data.seed``.
Under several processes each process feeds its data shard's rows and process 0 writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from r1jax import multihost
from r1jax.config import Stage
from r1jax.data.packing import DROPPED
from r1jax.data.teacher_topk import topk_fields
from r1jax.losses import chunked_map, teacher_topk
from r1jax.model import ModelConfig, hidden_states, logits_from_hidden, param_shardings
from r1jax.model.reward import right_padded_inputs
from r1jax.train.objectives import head_params
from r1jax.train.step import batch_sharding


def make_topk_fn(config: ModelConfig, mesh, k: int, temperature: float):
    """Jitted ``fn(params, tokens int32 [B, T], last int32 [B]) -> (indices int32 [B, T, K],
    logprobs f32 [B, T, K])`` of right-padded rows, on ``mesh``."""

    def fn(params, tokens, last):
        positions, segment_ids = right_padded_inputs(last, tokens.shape[1])
        hidden, _ = hidden_states(
            params, tokens, config, positions=positions, segment_ids=segment_ids
        )
        per_chunk = lambda head, xs: teacher_topk(
            logits_from_hidden(head, xs["hidden"], config), k, temperature
        )
        return chunked_map(
            per_chunk, head_params(params, config), {"hidden": hidden}, chunk=config.logits_chunk
        )

    batch_sh = batch_sharding(mesh)
    return jax.jit(fn, in_shardings=(param_shardings(config, mesh), batch_sh, batch_sh))


def _records(stage: Stage):
    """The records in order: a file source once, a task's ``steps x batch_size`` examples."""
    from r1jax.data.pipeline import as_record_dataset
    from r1jax.train.setup import make_source

    records = as_record_dataset(make_source(stage.data), purpose="sft", seed=stage.data.seed)
    count = len(records) if stage.data.path else stage.train.steps * stage.train.batch_size
    return (records[i] for i in range(count))


def _batches(stage: Stage, tokenizer, counts: dict):
    """Lists of up to ``train.batch_size`` (record, tokenised example) pairs."""
    from r1jax.data.pipeline import SFTExample

    make = SFTExample(tokenizer, "r1_zero", stage.train.seq_len, "skip", True, False)
    batch = []
    for record in _records(stage):
        example = make(record)
        if DROPPED in example:
            counts["dropped_too_long"] += 1
            continue
        batch.append((record, example["tokens"]))
        if len(batch) == stage.train.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(stage: Stage, model_dir: str | Path, output: str | Path, tokenizer_fallback="") -> dict:
    """Writes ``output`` (JSONL) and ``<output>.stats.json``; returns the counts."""
    from r1jax.data import load_tokenizer
    from r1jax.evaluation.stage import load_model

    fallback = stage.data.tokenizer or tokenizer_fallback
    config, params, tokenizer, mesh = load_model(stage, model_dir, fallback)
    if stage.data.tokenizer:  # the student's, which the stored tokens must match
        tokenizer = load_tokenizer(stage.data.tokenizer)
    train, k = stage.train, stage.distill.top_k
    if not 1 <= k <= config.vocab_size:
        raise ValueError(
            f"config.distill.top_k={k}: between 1 and the vocabulary {config.vocab_size}"
        )
    topk = make_topk_fn(config, mesh, k, stage.distill.temperature)
    splits = multihost.batch_splits(mesh)
    if train.batch_size % splits:
        raise ValueError(
            f"config.train.batch_size={train.batch_size}: a multiple of the mesh's {splits} "
            "batch shards (or set config.mesh)"
        )
    rows = multihost.batch_feed(mesh, train.batch_size, "config.train.batch_size").rows(
        train.batch_size
    )
    counts = {"examples": 0, "dropped_too_long": 0, "top_k": k}
    writer = open(output, "w") if jax.process_index() == 0 else None  # noqa: SIM115
    try:
        for batch in _batches(stage, tokenizer, counts):
            tokens = np.full((train.batch_size, train.seq_len), tokenizer.pad_id, np.int32)
            last = np.zeros(train.batch_size, np.int32)
            for i, (_, ids) in enumerate(batch):
                tokens[i, : len(ids)], last[i] = ids, len(ids) - 1
            inputs = multihost.host_local_to_global((tokens[rows], last[rows]), mesh)
            with jax.set_mesh(mesh):
                indices, logprobs = topk(params, *inputs)
            indices, logprobs = (
                multihost.gather_shards(multihost.data_shard_rows(x, mesh), mesh)
                for x in (indices, logprobs)
            )
            counts["examples"] += len(batch)
            for i, (record, ids) in enumerate(batch):
                n = len(ids)
                line = {k: v for k, v in record.items() if k != "_origin"}
                line |= topk_fields(ids, indices[i, :n], logprobs[i, :n])
                if writer is not None:
                    writer.write(json.dumps(line) + "\n")
    finally:
        if writer is not None:
            writer.close()
    if jax.process_index() == 0:
        Path(f"{output}.stats.json").write_text(json.dumps(counts, indent=2))
    return counts
