"""One tokenizer interface over sentencepiece models and Hugging Face ``tokenizer.json`` files.

Conventions shared by both implementations:

* ``encode(text)`` never adds special tokens by itself (no hidden BOS from a HF post-processor);
  ``add_bos=True`` prepends ``bos_id`` when the model has one (Qwen has none: ``bos_id is None``)
  and, for Hugging Face tokenizers, where Hugging Face would (``add_bos_token``, else the
  post-processor: Phi-3-like configs name a BOS they never add).
* The R1 tags ``<think> </think> <answer> </answer>`` are single ids when the vocabulary has them
  (``special_ids`` maps the tags that exist; the ``*_id`` properties are ``None`` otherwise).
* ``pad_id`` always exists: the model's pad token, else ``eos_id``, else 0. Masks, not the pad
  value, say what is real, so reusing eos for padding is safe.
* ``decode(ids, skip_special=True)`` drops the control ids (bos/eos/pad) and renders everything
  else, R1 tags included, so stop strings such as ``</answer>`` can be found in partial outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

R1_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_TAG_NAMES = ("think_start", "think_end", "answer_start", "answer_end")


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipelines, the sampler and the trainers need from a tokenizer."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int
    think_start_id: int | None  # <think>, None when the vocabulary has no single token for it
    think_end_id: int | None  # </think>
    answer_start_id: int | None  # <answer>
    answer_end_id: int | None  # </answer>

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str: ...

    def token_to_id(self, token: str) -> int | None: ...

    @property
    def special_ids(self) -> dict[str, int]: ...


class _TagIdsMixin:
    """``special_ids`` and the R1 tag properties, derived from the class's ``token_to_id``."""

    @property
    def special_ids(self) -> dict[str, int]:
        """Tag text → id for the R1 tags that are single tokens, plus bos/eos/pad by name."""
        ids = {tag: i for tag in R1_TAGS if (i := self.token_to_id(tag)) is not None}
        for name in ("bos", "eos", "pad"):
            value = getattr(self, f"{name}_id")
            if value is not None:
                ids[name] = value
        return ids

    def _tag(self, k: int) -> int | None:
        return self.token_to_id(R1_TAGS[k])

    think_start_id = property(lambda self: self._tag(0))
    think_end_id = property(lambda self: self._tag(1))
    answer_start_id = property(lambda self: self._tag(2))
    answer_end_id = property(lambda self: self._tag(3))

    def _control_ids(self) -> frozenset[int]:
        return frozenset(i for i in (self.bos_id, self.eos_id, self.pad_id) if i is not None)


class SentencePieceTokenizer(_TagIdsMixin):
    """A sentencepiece ``.model`` file (e.g. one made by :func:`train_sentencepiece`)."""

    def __init__(self, model_path: str | os.PathLike):
        import sentencepiece as spm

        self.path = str(model_path)
        self._sp = spm.SentencePieceProcessor(model_file=self.path)
        self.vocab_size = int(self._sp.get_piece_size())
        self.bos_id = _nonneg(self._sp.bos_id())
        self.eos_id = _nonneg(self._sp.eos_id())
        pad = _nonneg(self._sp.pad_id())
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)
        self.unk_id = _nonneg(self._sp.unk_id())

    def __getstate__(self):  # pickled by path (grain worker processes re-open the model)
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        ids = self._sp.encode(text)
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else list(ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts in one call (faster than a Python loop)."""
        return self._sp.encode(list(texts))

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special:
            control = self._control_ids()
            ids = [i for i in ids if i not in control]
        return self._sp.decode(ids)

    def token_to_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        return int(i) if 0 <= i < self.vocab_size and self._sp.id_to_piece(i) == token else None

    def id_to_token(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.path!r}, vocab_size={self.vocab_size})"


class HFTokenizer(_TagIdsMixin):
    """A Hugging Face ``tokenizer.json`` (Qwen2.5, Llama 3, DeepSeek-R1-Distill, ...).

    Special tokens come from a ``tokenizer_config.json`` next to the file when there is one
    (``bos_token``/``eos_token``/``pad_token`` and ``chat_template``), else from common names.
    """

    _EOS_GUESSES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")
    _BOS_GUESSES = ("<|begin_of_text|>", "<s>", "<bos>", "<｜begin▁of▁sentence｜>")
    _PAD_GUESSES = ("<pad>", "<|pad|>", "[PAD]")

    def __init__(self, tokenizer_json_path: str | os.PathLike, config_path: str | None = None):
        from tokenizers import Tokenizer as _HF

        self.path = str(tokenizer_json_path)
        self._tok = _HF.from_file(self.path)
        if config_path is None:
            candidate = Path(self.path).with_name("tokenizer_config.json")
            config_path = str(candidate) if candidate.exists() else None
        config = json.loads(Path(config_path).read_text()) if config_path else {}
        self.chat_template: str | None = _pick_chat_template(config.get("chat_template"))
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.bos_id = self._special(config, "bos_token", self._BOS_GUESSES)
        self.adds_bos = self._adds_bos(config)
        self.eos_id = self._special(config, "eos_token", self._EOS_GUESSES)
        pad = self._special(config, "pad_token", self._PAD_GUESSES)
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)

    def _adds_bos(self, config: dict) -> bool:
        """Whether Hugging Face prepends the BOS when it encodes text: the config's
        ``add_bos_token`` where it says, else what ``tokenizer.json``'s post-processor does."""
        if self.bos_id is None:
            return False
        if "add_bos_token" in config:
            return bool(config["add_bos_token"])
        ids = self._tok.encode("a", add_special_tokens=True).ids
        return bool(ids) and ids[0] == self.bos_id

    def _special(self, config: dict, key: str, guesses: tuple[str, ...]) -> int | None:
        if key in config:  # An explicit null (Qwen's bos_token) means "none": do not guess.
            value = config[key]
            if isinstance(value, dict):
                value = value.get("content")
            return self.token_to_id(value) if isinstance(value, str) else None
        for guess in guesses:
            if (i := self.token_to_id(guess)) is not None:
                return i
        return None

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_id is None else self._tok.id_to_token(self.bos_id)

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_id is None else self._tok.id_to_token(self.eos_id)

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Ids of `text`; ``add_bos``: with the BOS where Hugging Face adds one (``adds_bos``)."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos and self.adds_bos else list(ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special:
            control = self._control_ids()
            ids = [i for i in ids if i not in control]
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        i = self._tok.token_to_id(token)
        return None if i is None else int(i)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r}, vocab_size={self.vocab_size})"


def load_tokenizer(path: str | os.PathLike) -> SentencePieceTokenizer | HFTokenizer:
    """Open a tokenizer by what ``path`` is.

    * a directory with ``tokenizer.json`` (a HF checkpoint) → :class:`HFTokenizer`;
    * a directory with ``tokenizer.model`` (or one ``*.model``) → :class:`SentencePieceTokenizer`;
    * a ``.json`` file → :class:`HFTokenizer`; a ``.model`` file → :class:`SentencePieceTokenizer`.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "tokenizer.json").exists():
            return HFTokenizer(p / "tokenizer.json")
        models = [p / "tokenizer.model"] if (p / "tokenizer.model").exists() else []
        models = models or sorted(p.glob("*.model"))
        if len(models) == 1 or (models and models[0].name == "tokenizer.model"):
            return SentencePieceTokenizer(models[0])
        raise FileNotFoundError(
            f"{p}: no tokenizer found (expected tokenizer.json or one *.model file, "
            f"found {sorted(x.name for x in p.iterdir())})"
        )
    if not p.exists():
        raise FileNotFoundError(f"{p}: tokenizer file does not exist")
    if p.suffix == ".json":
        return HFTokenizer(p)
    if p.suffix == ".model":
        return SentencePieceTokenizer(p)
    raise ValueError(f"{p}: unknown tokenizer file type (expected .model or tokenizer.json)")


def _nonneg(i: int) -> int | None:
    return int(i) if i >= 0 else None


def _pick_chat_template(value: object) -> str | None:
    """HF stores one template string, or a list of ``{name, template}`` (use ``default``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    return None


class ClippedVocabTokenizer:
    """A tokenizer whose ``decode`` drops ids >= its vocabulary size.

    A model's embedding table is often larger than its tokenizer (padded vocabularies, or a
    sentencepiece model that came out smaller than ``vocab_size``), so the sampler can emit ids
    the tokenizer cannot decode; they have no text, and decode to nothing here. Everything else
    is the wrapped tokenizer's.
    """

    def __init__(self, tokenizer):
        self._tok = tokenizer

    def __getattr__(self, name):
        if name == "_tok":  # unpickling: not set yet (no recursion into __getattr__)
            raise AttributeError(name)
        return getattr(self._tok, name)

    def decode(self, ids, **kwargs):
        n = self._tok.vocab_size
        return self._tok.decode([int(i) for i in ids if int(i) < n], **kwargs)
