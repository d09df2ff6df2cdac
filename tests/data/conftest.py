"""Fixtures for the data tests: tiny tokenizers of both kinds, trained once per session."""

from __future__ import annotations

import json

import pytest
from data_common import QWEN_LIKE_CHAT_TEMPLATE, corpus_texts

from r1jax.data import (
    R1_TAGS,
    SentencePieceTokenizer,
    load_tokenizer,
    train_sentencepiece,
)


@pytest.fixture(scope="session")
def sp_tokenizer(tmp_path_factory) -> SentencePieceTokenizer:
    path = train_sentencepiece(corpus_texts(), tmp_path_factory.mktemp("sp") / "tok", 512)
    return SentencePieceTokenizer(path)


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
