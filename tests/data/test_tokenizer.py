"""Tokenizers: round trips on task text, R1 tags as single ids, loading, pickling, the CLI."""

from __future__ import annotations

import json
import pickle

import pytest
from data_common import EXTRA_TEXT, corpus_texts

from r1jax.data import (
    R1_TAGS,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    format_r1_zero,
    get_task,
    load_tokenizer,
)
from r1jax.data.tokenizer_cli import main as tokenizer_main


def task_strings() -> list[str]:
    out = list(EXTRA_TEXT)
    for name in ("arithmetic", "countdown"):
        task = get_task(name)
        for i in range(1000, 1100):  # indices not in the training corpus
            ex = task.example(i, seed=7)
            out += [format_r1_zero(ex["prompt"]), ex["gold_cot"], ex["answer"]]
            out.append(f"<think>{ex['gold_cot']}</think> <answer>{ex['answer']}</answer>")
    out += ["  leading and trailing spaces  ", "multiple   spaces\n\n\nlines", "{braces} \\boxed{}"]
    return out


def test_encode_decode_is_identity_on_task_text(tokenizer):
    assert isinstance(tokenizer, Tokenizer)
    for s in task_strings():
        ids = tokenizer.encode(s)
        assert all(isinstance(i, int) for i in ids)
        assert tokenizer.decode(ids) == s


def test_r1_tags_are_single_distinct_ids(tokenizer):
    ids = [tokenizer.think_start_id, tokenizer.think_end_id]
    ids += [tokenizer.answer_start_id, tokenizer.answer_end_id]
    assert None not in ids and len(set(ids)) == 4
    for tag, i in zip(R1_TAGS, ids, strict=True):
        assert tokenizer.encode(tag) == [i]
        assert tokenizer.special_ids[tag] == i
        assert tokenizer.decode([i]) == tag
    text = "<think>1 + 2 = 3.</think> <answer>3</answer>"
    encoded = tokenizer.encode(text)
    assert encoded[0] == ids[0] and encoded[-1] == ids[3]
    assert encoded.count(ids[1]) == 1 and encoded.count(ids[2]) == 1


def test_control_ids_pad_and_bos(tokenizer):
    assert tokenizer.eos_id is not None and tokenizer.pad_id is not None
    ids = tokenizer.encode("12 + 3", add_bos=True)
    if tokenizer.bos_id is None:  # Qwen-style: no BOS token, add_bos is a no-op
        assert ids == tokenizer.encode("12 + 3")
    else:
        assert ids[0] == tokenizer.bos_id and ids[1:] == tokenizer.encode("12 + 3")
    with_eos = tokenizer.encode("<answer>7</answer>") + [tokenizer.eos_id]
    assert tokenizer.decode(with_eos) == "<answer>7</answer>"


def test_partial_decode_finds_stop_string(tokenizer):
    """The sampler decodes growing prefixes of a completion to look for ``</answer>``."""
    text = "<think>5 * 6 = 30. 30 - 4 = 26.</think> <answer>26</answer> trailing"
    ids = tokenizer.encode(text)
    stop_at = next(k for k in range(len(ids) + 1) if "</answer>" in tokenizer.decode(ids[:k]))
    assert ids[stop_at - 1] == tokenizer.answer_end_id
    for k in range(stop_at):
        assert text.startswith(tokenizer.decode(ids[:k]))


def test_load_tokenizer_picks_the_kind(sp_tokenizer, hf_dir, tmp_path):
    assert isinstance(load_tokenizer(sp_tokenizer.path), SentencePieceTokenizer)
    assert isinstance(load_tokenizer(hf_dir), HFTokenizer)
    assert isinstance(load_tokenizer(hf_dir / "tokenizer.json"), HFTokenizer)
    sp_dir = tmp_path / "spdir"
    sp_dir.mkdir()
    (sp_dir / "tokenizer.model").write_bytes(open(sp_tokenizer.path, "rb").read())
    assert isinstance(load_tokenizer(sp_dir), SentencePieceTokenizer)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.model")
    (tmp_path / "vocab.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown tokenizer file type"):
        load_tokenizer(tmp_path / "vocab.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer found"):
        load_tokenizer(tmp_path / "empty")


def test_hf_special_tokens_from_config_and_guessing(hf_tokenizer, hf_dir, tmp_path):
    assert hf_tokenizer.bos_id is None  # explicit null in tokenizer_config.json
    assert hf_tokenizer.eos_id == hf_tokenizer.token_to_id("<|endoftext|>")
    assert hf_tokenizer.pad_id == hf_tokenizer.eos_id
    bare = tmp_path / "tokenizer.json"
    bare.write_text((hf_dir / "tokenizer.json").read_text())
    guessed = HFTokenizer(bare)  # no config next to it: eos guessed by name, pad falls back
    assert guessed.eos_id == hf_tokenizer.eos_id and guessed.pad_id == guessed.eos_id
    assert guessed.chat_template is None


def test_tokenizers_pickle(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    s = "Compute 12 * 4 - 9"
    assert clone.encode(s) == tokenizer.encode(s) and clone.vocab_size == tokenizer.vocab_size


def test_cli_trains_on_jsonl_txt_and_task(tmp_path, capsys):
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in corpus_texts(50)) + "\n")
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n".join(EXTRA_TEXT))
    prefix = tmp_path / "out" / "tok"
    argv = [f"--config.tokenizer.inputs=('{jsonl}', '{txt}')", "--config.tokenizer.field=text"]
    argv += ["--config.tokenizer.task=countdown", "--config.tokenizer.num_examples=200"]
    argv += [f"--config.tokenizer.model_prefix={prefix}", "--config.tokenizer.vocab_size=400"]
    assert tokenizer_main(argv) == 0
    tok = load_tokenizer(str(prefix) + ".model")
    assert tok.vocab_size <= 400 and tok.encode("</answer>") == [tok.answer_end_id]
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_bad_jsonl_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n')
    argv = [
        f"--config.tokenizer.inputs=('{bad}',)",
        f"--config.tokenizer.model_prefix={tmp_path / 't'}",
        "--config.tokenizer.vocab_size=300",
    ]
    assert tokenizer_main(argv) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "'text'" in err
    with pytest.raises(ValueError, match="config.tokenizer.inputs"):
        tokenizer_main(["--config.tokenizer.model_prefix=x"])
    missing = [f"--config.tokenizer.inputs=('{tmp_path / 'typo.jsonl'}',)", *argv[1:]]
    with pytest.raises(FileNotFoundError, match="config.tokenizer.inputs: no such file"):
        tokenizer_main(missing)  # it trained on the file's name as text


def test_a_bos_is_added_where_hugging_face_adds_one(hf_dir, tmp_path):
    """A config naming a BOS with add_bos_token false (Phi-3-like) or a tokenizer.json whose
    post-processor adds none gets no BOS (every prompt began with one); the post-processor or
    add_bos_token true gets it, as transformers' tokenizer(text) does."""
    from tokenizers import Tokenizer, processors

    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    bos = "<|im_start|>"
    with_post = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    bos_id = tok.token_to_id(bos)
    with_post.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, bos_id)]
    )
    cases = {
        "no_post": (tok, {}),
        "post": (with_post, {}),
        "flag_off": (with_post, {"add_bos_token": False}),
        "flag_on": (tok, {"add_bos_token": True}),
    }
    for name, (t, extra) in cases.items():
        d = tmp_path / name
        d.mkdir()
        t.save(str(d / "tokenizer.json"))
        config = {"bos_token": bos, "eos_token": "<|endoftext|>", **extra}
        (d / "tokenizer_config.json").write_text(json.dumps(config))
        ours = load_tokenizer(d).encode("12 + 3", add_bos=True)
        theirs = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(d / "tokenizer.json"), **config
        )("12 + 3")["input_ids"]
        assert ours == theirs, name
