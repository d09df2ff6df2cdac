"""``r1jax tokenizer``: train a sentencepiece model on a text/JSONL corpus or a built-in task.

Examples::

    r1jax tokenizer --config.tokenizer.inputs="('corpus.txt',)" \\
        --config.tokenizer.model_prefix=out/tok --config.tokenizer.vocab_size=8000
    r1jax tokenizer --config.tokenizer.inputs="('data.jsonl',)" --config.tokenizer.field=text \\
        --config.tokenizer.model_prefix=out/tok --config.tokenizer.vocab_size=8000
    r1jax tokenizer --config.tokenizer.task=countdown --config.tokenizer.model_prefix=out/tok

The R1 tags (``<think>``, ``</answer>``, ...) are single ids; digits are split unless
``split_digits=False``.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code (corpus errors are printed, not raised)."""
    from r1jax.config import typed
    from r1jax.config.flags import parse_config
    from r1jax.data import get_task
    from r1jax.data.errors import DataError
    from r1jax.data.tokenizer import SentencePieceTokenizer
    from r1jax.data.tokenizer_train import iter_corpus_lines, tokenizer_corpus, train_sentencepiece

    config, _ = parse_config(
        argv or [], command="r1jax tokenizer", default="tokenizer", doc=__doc__
    )
    tok = typed(config).tokenizer
    if not tok.inputs and not tok.task:
        raise ValueError("set config.tokenizer.inputs (files) and/or config.tokenizer.task")
    missing = [p for p in tok.inputs if not Path(p).is_file()]
    if missing:  # a file name that is not there would be trained on as text
        raise FileNotFoundError(f"config.tokenizer.inputs: no such file {missing}")
    if not tok.model_prefix:
        raise ValueError("set config.tokenizer.model_prefix (writes PREFIX.model, PREFIX.vocab)")
    try:
        task = get_task(tok.task, **dict(tok.task_options)) if tok.task else None
        task_text = (
            tokenizer_corpus(task, tok.num_examples, tok.seed, layout="template_once")
            if task
            else []
        )
        corpus = itertools.chain(iter_corpus_lines(list(tok.inputs), tok.field), task_text)
        path = train_sentencepiece(
            corpus,
            tok.model_prefix,
            tok.vocab_size,
            model_type=tok.model_type,
            split_digits=tok.split_digits,
        )
    except (DataError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    trained = SentencePieceTokenizer(path)
    print(f"wrote {path} (vocab_size={trained.vocab_size}, special ids {trained.special_ids})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
