"""Templates: the exact R1-Zero text, the chat templates, and completion-only SFT masks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from data_common import QWEN_LIKE_CHAT_TEMPLATE

from r1jax.data import (
    R1_ZERO_TEMPLATE,
    ChatTemplate,
    PromptFormatter,
    build_sft_example,
    format_completion,
    format_r1_zero,
    sft_tokens,
)

# Typed from SPEC §7 / the R1 paper, table 1.
EXPECTED = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer. The reasoning process and answer are enclosed within <think> </think> "
    "and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {prompt}. Assistant:"
)


def spec_template() -> str | None:
    """The blockquote of SPEC §7, joined into one line, when the spec is reachable."""
    for base in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parents[3]):
        spec = base / "shared" / "SPEC.md" if base.name != "shared" else base / "SPEC.md"
        if spec.exists():
            quote = re.findall(r"^> ?(.*)$", spec.read_text(), flags=re.M)
            return " ".join(line.strip() for line in quote if line.strip()) or None
    return None


def test_r1_zero_template_is_the_spec_text():
    assert R1_ZERO_TEMPLATE == EXPECTED
    from_spec = spec_template()
    if from_spec is not None:
        assert R1_ZERO_TEMPLATE == from_spec
    text = format_r1_zero("Compute {x} + 1")  # braces in the question are kept literally
    assert text == EXPECTED.replace("{prompt}", "Compute {x} + 1")
    assert text.endswith("User: Compute {x} + 1. Assistant:")


def test_completion_layout():
    assert format_completion("2 + 2 = 4.", "4") == "<think>2 + 2 = 4.</think> <answer>4</answer>"


def test_sft_mask_covers_exactly_the_completion(tokenizer):
    prompt, think, answer = "Compute 12 * 4 - 9", "12 * 4 = 48. 48 - 9 = 39.", "39"
    ex = build_sft_example(tokenizer, prompt, think, answer)
    tokens, mask = ex["tokens"], ex["loss_mask"]
    assert tokens.dtype == np.int32 and mask.dtype == np.int32 and tokens.shape == mask.shape
    prompt_ids = tokenizer.encode(format_r1_zero(prompt), add_bos=True)
    completion_ids = tokenizer.encode(format_completion(think, answer)) + [tokenizer.eos_id]
    np.testing.assert_array_equal(tokens, prompt_ids + completion_ids)
    np.testing.assert_array_equal(mask, [0] * len(prompt_ids) + [1] * len(completion_ids))
    assert tokens[-1] == tokenizer.eos_id and mask[-1] == 1
    assert tokenizer.decode(tokens[mask == 1]) == format_completion(think, answer)
    assert tokenizer.decode(tokens[mask == 0]) == format_r1_zero(prompt)


def test_sft_example_with_raw_completion_and_raw_template(tokenizer):
    ex = build_sft_example(tokenizer, "Q", completion="A!", template="raw", add_bos=False)
    n_prompt = len(tokenizer.encode("Q"))
    assert ex["loss_mask"].tolist() == [0] * n_prompt + [1] * (len(ex["tokens"]) - n_prompt)
    assert tokenizer.decode(ex["tokens"][n_prompt:]) == "A!"
    with pytest.raises(ValueError, match="think and answer"):
        build_sft_example(tokenizer, "Q", think="t")


def test_hf_chat_template_is_rendered(hf_tokenizer):
    fmt = PromptFormatter("chat", hf_tokenizer)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert fmt({"prompt": "2+2?", "messages": msgs}) == expected
    only_prompt = fmt({"prompt": "2+2?"})
    assert only_prompt == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    ids = hf_tokenizer.encode(only_prompt)
    assert ids[0] == hf_tokenizer.token_to_id("<|im_start|>")  # special token parsed, one id
    rendered = ChatTemplate(QWEN_LIKE_CHAT_TEMPLATE).render(msgs, add_generation_prompt=False)
    assert rendered == expected.removesuffix("<|im_start|>assistant\n")


def test_fallback_chat_template_without_hf_config(sp_tokenizer):
    fmt = PromptFormatter("chat", sp_tokenizer)
    assert fmt({"prompt": "Hi"}) == "<|user|>\nHi\n<|assistant|>\n"
    chat = ChatTemplate()
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert chat.render(msgs, add_generation_prompt=False) == "<|system|>\nS\n<|user|>\nU\n"


def test_chat_template_bos_is_not_doubled(hf_tokenizer, sp_tokenizer):
    class WithBos:
        """An SP tokenizer whose chat rendering starts with its BOS text."""

        def __getattr__(self, name):
            return getattr(sp_tokenizer, name)

        bos_token = "<s>"

    ex = sft_tokens(WithBos(), "<s>User: hi", "ok", add_bos=True, add_eos=True)
    assert (ex["tokens"] == sp_tokenizer.bos_id).sum() == 0  # "<s>" text is not a control id
    ex = sft_tokens(sp_tokenizer, "User: hi", "ok", add_bos=True, add_eos=True)
    assert ex["tokens"][0] == sp_tokenizer.bos_id


def test_unknown_template_is_rejected(sp_tokenizer):
    with pytest.raises(ValueError, match="template must be"):
        PromptFormatter("alpaca", sp_tokenizer)


def test_the_r1_zero_template_speaks_the_records_language():
    from r1jax.data.templates import R1_ZERO_TEMPLATE_ZH, PromptFormatter, format_r1_zero

    formatter = PromptFormatter("r1_zero", tokenizer=None)
    zh = formatter({"prompt": "3 + 4 等于多少", "language": "zh"})
    assert zh == R1_ZERO_TEMPLATE_ZH.replace("{prompt}", "3 + 4 等于多少")
    assert zh.endswith("用户：3 + 4 等于多少。助手：") and "<think> </think>" in zh
    assert (
        formatter({"prompt": "q"})
        == format_r1_zero("q")
        == formatter({"prompt": "q", "language": "fr"})
    )  # no French template: the English one
    with pytest.raises(ValueError, match="no R1-Zero template for language 'de'"):
        format_r1_zero("q", "de")


def test_chat_templates_render_in_transformers_environment():
    """tojson without ASCII or HTML escaping, {% break %} and strftime_now, as transformers'
    apply_chat_template has them (tools, dated system prompts)."""
    source = (
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{{ m | tojson }}{% endfor %}{{ strftime_now('%Y') | length }}"
    )
    msgs = [{"role": "user", "content": "a<b & 'c' 日本"}, {"role": "user", "content": "x"}]
    got = ChatTemplate(source).render(msgs, add_generation_prompt=False)
    assert got == '{"role": "user", "content": "a<b & \'c\' 日本"}4'
    utils = pytest.importorskip("transformers.utils.chat_template_utils")
    assert got == utils._compile_jinja_template(source).render(messages=msgs)
