"""Train a small sentencepiece model for the R1 tags, digits and round-trip-exact text, on
files, texts or a built-in task's examples (``tokenizer_corpus``).

Settings chosen so that ``decode(encode(s)) == s`` for any text: identity normalisation, no
dummy-prefix space, whitespace kept as is, byte fallback for characters outside the vocabulary
(newlines included). Ids: ``pad=0, unk=1, bos=2, eos=3``; the four R1 tags are user-defined
symbols, hence single ids wherever they appear in text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from r1jax.data.errors import DataError, origin_of
from r1jax.data.tasks import Task, get_task, iter_examples
from r1jax.data.templates import (
    R1_ZERO_TEMPLATE,
    R1_ZERO_TEMPLATES,
    format_completion,
    format_r1_zero,
)
from r1jax.data.tokenizer import R1_TAGS

# 256 byte pieces + pad/unk/bos/eos + the R1 tags: the smallest vocabulary that works.
MIN_VOCAB_SIZE = 256 + 4 + len(R1_TAGS)


def iter_corpus_lines(
    corpus: str | os.PathLike | Iterable[str | os.PathLike] | Iterable[str],
    field: str = "text",
) -> Iterator[str]:
    """Yield training lines from paths (``.txt`` lines, ``.jsonl`` ``field``) or from raw texts.

    A string is a path when it names an existing file, else it is text. Multi-line texts are
    split into lines (sentencepiece trains on lines; newlines are covered by byte fallback).
    """
    items = [corpus] if isinstance(corpus, (str, os.PathLike)) else corpus
    for item in items:
        if isinstance(item, os.PathLike) or (isinstance(item, str) and _is_file(item)):
            yield from _file_lines(Path(item), field)
        else:
            yield from (line for line in str(item).split("\n") if line)


CORPUS_LAYOUTS = ("fields", "example", "template_once")


def tokenizer_corpus(
    task: Task | str, num_examples: int, seed: int = 0, *, layout: str
) -> list[str]:
    """Texts to train a tokenizer on, from a built-in task's examples ``0 .. num_examples - 1``
    drawn with ``seed`` (``task``: a task, or a registered task's name with default options).

    ``layout`` keeps each caller's corpus as it was (the trained tokenizer depends on it):

    - ``"fields"``: per example, the R1-Zero prompt, the gold reasoning and the answer as three
      texts (``r1jax train``'s tokenizer);
    - ``"example"``: per example, the R1-Zero prompt followed by its formatted completion, one
      text (the recipes' ``tokenizer`` stage);
    - ``"template_once"``: the R1-Zero template once, then per example the bare question and the
      formatted completion (``r1jax tokenizer`` with ``config.tokenizer.task``).
    """
    if layout not in CORPUS_LAYOUTS:
        raise ValueError(f"tokenizer corpus layout {layout!r}: one of {CORPUS_LAYOUTS}")
    task = get_task(task) if isinstance(task, str) else task
    texts = [R1_ZERO_TEMPLATE] if layout == "template_once" else []
    templates = {"en"}  # the R1-Zero templates in the corpus (a Chinese task adds its own)
    for _, ex in zip(range(num_examples), iter_examples(task, seed=seed), strict=False):
        language = ex.get("language", "en")
        prompt = format_r1_zero(ex["prompt"], language)
        if layout == "fields":
            texts += [prompt, ex["gold_cot"], str(ex["answer"])]
        elif layout == "example":
            texts.append(prompt + format_completion(ex["gold_cot"], ex["answer"]))
        else:
            if language not in templates:
                texts.append(R1_ZERO_TEMPLATES[language])
            texts += [ex["prompt"], format_completion(ex["gold_cot"], ex["answer"])]
        templates.add(language)
    return texts


def _is_file(s: str) -> bool:
    return "\n" not in s and len(s) < 4096 and os.path.isfile(s)


def _file_lines(path: Path, field: str) -> Iterator[str]:
    if path.suffix != ".jsonl":
        with path.open(encoding="utf-8") as f:
            yield from (line.rstrip("\n") for line in f if line.strip())
        return
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(f"malformed JSON ({e.msg})", origin=origin_of(path, n)) from None
            value = record.get(field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                got = "missing" if value is None else type(value).__name__
                raise DataError(
                    f"expected a string, got {got}", origin=origin_of(path, n), field=field
                )
            yield from (line for line in value.split("\n") if line)


def train_sentencepiece(
    corpus: str | os.PathLike | Iterable[str | os.PathLike] | Iterable[str],
    model_prefix: str | os.PathLike,
    vocab_size: int,
    *,
    field: str = "text",
    model_type: str = "bpe",
    split_digits: bool = True,
    byte_fallback: bool = True,
    user_defined_symbols: tuple[str, ...] = R1_TAGS,
    max_sentences: int = 1_000_000,
    num_threads: int = 2,
    seed_sentencepiece_size: int = 100_000,
) -> str:
    """Train a sentencepiece model on ``corpus``; returns the path of ``<model_prefix>.model``.

    ``vocab_size`` is an upper bound (``hard_vocab_limit=False``): a small corpus gives a smaller
    vocabulary rather than an error. It must be at least :data:`MIN_VOCAB_SIZE` with byte fallback.
    Takes about a second for a few thousand lines and a vocabulary of a few hundred.
    """
    import sentencepiece as spm

    if byte_fallback and vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} < {MIN_VOCAB_SIZE} (256 byte pieces + specials)")
    lines = []
    for line in iter_corpus_lines(corpus, field):
        lines.append(line)
        if len(lines) >= max_sentences:
            break
    if not lines:
        raise DataError("the tokenizer corpus is empty", origin=str(corpus)[:200])
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=split_digits,
        byte_fallback=byte_fallback,
        user_defined_symbols=list(user_defined_symbols),
        hard_vocab_limit=False,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=False,
        seed_sentencepiece_size=seed_sentencepiece_size,
        num_threads=num_threads,
        minloglevel=2,
    )
    return str(prefix) + ".model"
