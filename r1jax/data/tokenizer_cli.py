"""``r1jax tokenizer train``: train a sentencepiece model on a text/JSONL corpus or a built-in task.

Examples::

    r1jax tokenizer train --input corpus.txt --model-prefix out/tok --vocab-size 8000
    r1jax tokenizer train --input data.jsonl --field text --model-prefix out/tok --vocab-size 8000
    r1jax tokenizer train --task countdown --model-prefix out/tok --vocab-size 512
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1jax tokenizer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a sentencepiece model (R1 tags as single ids)")
    train.add_argument(
        "--input", action="append", default=[], help="a .txt or .jsonl file (repeatable)"
    )
    train.add_argument(
        "--field", default="text", help="JSONL field holding the text (default: text)"
    )
    train.add_argument(
        "--task", action="append", default=[], help="also train on a built-in task's text"
    )
    train.add_argument("--task-examples", type=int, default=5000, help="examples per --task")
    train.add_argument("--model-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--model-type", default="bpe", choices=("bpe", "unigram"))
    train.add_argument("--no-split-digits", action="store_true", help="keep digit runs together")
    return parser


def _task_texts(names: list[str], n: int) -> Iterator[str]:
    """Lazily, so that an unknown task name is reported by ``main`` like any corpus error."""
    from r1jax.data.tokenizer_train import tokenizer_corpus

    for name in names:
        yield from tokenizer_corpus(name, n, layout="template_once")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code (errors are printed, not raised)."""
    from r1jax.data.errors import DataError
    from r1jax.data.tokenizer import SentencePieceTokenizer
    from r1jax.data.tokenizer_train import iter_corpus_lines, train_sentencepiece

    args = build_parser().parse_args(argv)
    if not args.input and not args.task:
        print("error: give at least one --input FILE or --task NAME", file=sys.stderr)
        return 2
    corpus = itertools.chain(
        iter_corpus_lines(args.input, args.field), _task_texts(args.task, args.task_examples)
    )
    try:
        path = train_sentencepiece(
            corpus,
            args.model_prefix,
            args.vocab_size,
            model_type=args.model_type,
            split_digits=not args.no_split_digits,
        )
    except (DataError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    tok = SentencePieceTokenizer(path)
    print(f"wrote {path} (vocab_size={tok.vocab_size}, special ids {tok.special_ids})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
