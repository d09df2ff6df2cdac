"""Text shared by the data tests (a plain module: test files import it by a unique name)."""

from __future__ import annotations

import itertools

from r1jax.data import R1_ZERO_TEMPLATE, format_completion, get_task, iter_examples

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


QWEN_LIKE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
