"""Fixtures for the data tests: tiny tokenizers of both kinds, trained once per session."""

from __future__ import annotations

import itertools
import json

import pytest

from r1jax.data import (
    R1_TAGS,
    R1_ZERO_TEMPLATE,
    SentencePieceTokenizer,
    format_completion,
    get_task,
    iter_examples,
    load_tokenizer,
    train_sentencepiece,
)

EXTRA_TEXT = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    "What is $\\frac{1}{2} + \\frac{1}{3}$? The answer is $\\boxed{\\frac{5}{6}}$.",
    "Héllo wörld — naïve café, 日本語のテキスト, emoji 🙂 and\ttabs\nand newlines.",
]


def corpus_texts(n: int = 300) -> list[str]:
    texts = [R1_ZERO_TEMPLATE, *EXTRA_TEXT]
    for name in ("arithmetic", "countdown"):
        for ex in itertools.islice(iter_examples(get_task(name)), n):
            texts += [ex["prompt"], format_completion(ex["gold_cot"], ex["answer"])]
    return texts


@pytest.fixture(scope="session")
def sp_tokenizer(tmp_path_factory) -> SentencePieceTokenizer:
    path = train_sentencepiece(corpus_texts(), tmp_path_factory.mktemp("sp") / "tok", 512)
    return SentencePieceTokenizer(path)


QWEN_LIKE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """A HF checkpoint-like directory: a tiny byte-level BPE tokenizer.json + tokenizer_config."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts(), trainer)
    # The R1 tags as added (non-special) tokens, as DeepSeek-R1-Distill checkpoints have them.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in R1_TAGS])
    d = tmp_path_factory.mktemp("hf")
    tok.save(str(d / "tokenizer.json"))
    config = {
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "chat_template": QWEN_LIKE_CHAT_TEMPLATE,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    return d


@pytest.fixture(scope="session")
def hf_tokenizer(hf_dir):
    return load_tokenizer(hf_dir)


@pytest.fixture(params=["sentencepiece", "hf"])
def tokenizer(request, sp_tokenizer, hf_tokenizer):
    return sp_tokenizer if request.param == "sentencepiece" else hf_tokenizer
