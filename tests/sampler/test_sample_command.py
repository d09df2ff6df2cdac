"""``r1jax sample`` end to end on a tiny Hugging Face directory (model + tokenizer.json)."""

import json

import jax
import pytest

from r1jax.commands import sample
from r1jax.data import R1_TAGS
from r1jax.model import ModelConfig, hf, init_params


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["What is 2+3? The answer is 5.", "User: hi. Assistant:"], trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in R1_TAGS])
    d = tmp_path_factory.mktemp("ckpt")
    tok.save(str(d / "tokenizer.json"))
    config = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    model = ModelConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=1, qkv_bias=True
    )
    hf.save(d, model, init_params(model, jax.random.key(0)))
    return d


@pytest.mark.slow
def test_sample_command_writes_g_completions_per_prompt(checkpoint, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2+3?"}) + "\n")
    out = tmp_path / "out.jsonl"
    argv = [f"--config.model_from={checkpoint}", "--config.sample.prompts=('hi',)"]
    argv += [f"--config.sample.prompts_file={prompts}", "--config.sample.num_samples=2"]
    argv += ["--config.sample.max_new_tokens=5", "--config.sample.temperature=0.8"]
    argv += ["--config.sample.top_p=0.9", f"--config.output={out}"]
    assert sample.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt_index"], r["sample"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["prompt"] for r in rows] == ["hi", "hi", "What is 2+3?", "What is 2+3?"]
    for r in rows:
        assert 1 <= r["length"] == len(r["tokens"]) == len(r["logprobs"]) <= 5
        assert r["finish_reason"] in ("stop", "length")
        assert all(lp <= 0 for lp in r["logprobs"])


def test_sample_command_rejects_bad_inputs(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        sample.main([f"--config.model_from={tmp_path / 'nope'}"])
    with pytest.raises(ValueError, match="not recognised"):
        sample.main([f"--config.model_from={tmp_path}"])
    with pytest.raises(ValueError, match="needs --config.model_from"):
        sample.main([])
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    with pytest.raises(ValueError, match="template must be 'r1_zero', 'chat', 'raw'"):
        sample.main([f"--config.model_from={checkpoint}", "--config.sample.template=bogus",
                     "--config.sample.prompts=('hi',)"])  # fmt: skip
    with pytest.raises(ValueError, match=r"p.jsonl:1: expected a JSON object"):
        sample.read_prompts([], str(bad))


def test_sample_refuses_a_reward_model(tmp_path):
    """A score-head model has no LM head of its own: it sampled through the tied embeddings."""
    model = ModelConfig(vocab_size=64, hidden_size=16, num_layers=1, score_head=True,
                        tie_embeddings=False)  # fmt: skip
    hf.save(tmp_path / "rm", model, init_params(model, jax.random.key(0)))
    with pytest.raises(ValueError, match="a reward model"):
        sample.main([f"--config.model_from={tmp_path / 'rm'}"])
