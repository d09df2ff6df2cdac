"""Prompt templates (R1-Zero, chat) and the SFT layout with its completion-only loss mask.

Completion layout (what SFT teaches and what the format reward accepts)::

    <think>{think}</think> <answer>{answer}</answer>

No whitespace is added inside the tags; one space separates the two blocks. The prompt text ends
where the template ends (``"... Assistant:"``) and the completion starts right after it; prompt and
completion are tokenised *separately*, exactly as the sampler sees them (prompt ids, then
generated ids), so the SFT boundary and the RL boundary are the same token boundary.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from r1jax.data.tokenizer import Tokenizer

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {prompt}. Assistant:"
)
"""The R1-Zero prompt [R1, table 1], verbatim; ``{prompt}`` is the question."""

R1_ZERO_TEMPLATE_ZH = (
    "用户与助手之间的对话。用户提出一个问题，助手来解决它。助手先在脑海中思考推理过程，然后向用户"
    "给出答案。推理过程和答案分别包含在 <think> </think> 和 <answer> </answer> 标签中，即 "
    "<think> 推理过程 </think> <answer> 答案 </answer>。用户：{prompt}。助手："
)
"""The R1-Zero prompt in Chinese (the same sentences and the same tags)."""

R1_ZERO_TEMPLATES = {"en": R1_ZERO_TEMPLATE, "zh": R1_ZERO_TEMPLATE_ZH}

# Simple chat layout for models without a chat template of their own.
FALLBACK_CHAT_TEMPLATE = "<|{role}|>\n{content}\n"
FALLBACK_GENERATION_PROMPT = "<|assistant|>\n"


def format_r1_zero(prompt: str, language: str = "en") -> str:
    """The R1-Zero prompt text for one question in ``language``'s template (``"en"`` or
    ``"zh"``; ``str.replace``, so braces in the question are safe)."""
    if language not in R1_ZERO_TEMPLATES:
        raise ValueError(
            f"no R1-Zero template for language {language!r}; known: {sorted(R1_ZERO_TEMPLATES)}"
        )
    return R1_ZERO_TEMPLATES[language].replace("{prompt}", prompt)


def format_completion(think: str, answer: str) -> str:
    """``<think>{think}</think> <answer>{answer}</answer>`` (see the module docstring)."""
    return f"<think>{think}</think> <answer>{answer}</answer>"


class ChatTemplate:
    """Renders chat messages: a HF Jinja ``chat_template`` when given, else the fallback layout.

    The fallback renders each message as ``<|role|>\\n{content}\\n`` and the generation prompt as
    ``<|assistant|>\\n``. HF templates are rendered with ``jinja2`` (imported only when used) in a
    sandbox, with ``bos_token``/``eos_token`` and ``add_generation_prompt`` as HF passes them.
    """

    def __init__(self, source: str | None = None, *, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self._compiled = None

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> ChatTemplate:
        """The tokenizer's own template (HF ``tokenizer_config.json``) or the fallback."""
        return cls(
            getattr(tokenizer, "chat_template", None),
            bos_token=getattr(tokenizer, "bos_token", None) or "",
            eos_token=getattr(tokenizer, "eos_token", None) or "",
        )

    def __getstate__(self):  # the compiled Jinja template does not pickle; recompile lazily
        return {**self.__dict__, "_compiled": None}

    def render(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool) -> str:
        if self.source is None:
            text = "".join(FALLBACK_CHAT_TEMPLATE.format(**m) for m in messages)
            return text + (FALLBACK_GENERATION_PROMPT if add_generation_prompt else "")
        if self._compiled is None:
            try:
                from jinja2.sandbox import ImmutableSandboxedEnvironment
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError("rendering a HF chat_template needs `pip install jinja2`") from e
            # The environment transformers renders chat templates in: loop controls, its tojson
            # (no ASCII or HTML escaping) and strftime_now.
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise_template_error
            env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
            self._compiled = env.from_string(self.source)
        return self._compiled.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_template_error(message: str) -> None:
    raise ValueError(f"chat template error: {message}")


class PromptFormatter:
    """Record → prompt text, picklable (grain workers). ``template`` is ``"r1_zero"``,
    ``"chat"``, ``"raw"`` or a callable ``record -> str``.

    ``"r1_zero"`` and ``"raw"`` use the record's ``prompt``; ``"r1_zero"`` speaks the record's
    ``language`` (its field: "zh" takes the Chinese template, anything else English).
    ``"chat"`` renders the record's ``messages`` (or a single user turn made of ``prompt``)
    with a generation prompt.
    """

    def __init__(self, template: str | Callable[[dict[str, Any]], str], tokenizer: Tokenizer):
        if not callable(template) and template not in ("r1_zero", "chat", "raw"):
            raise ValueError(
                f"template must be 'r1_zero', 'chat', 'raw' or a callable, got {template!r}"
            )
        self.template = template
        self.chat = ChatTemplate.for_tokenizer(tokenizer) if template == "chat" else None

    def __call__(self, record: dict[str, Any]) -> str:
        if callable(self.template):
            return self.template(record)
        if self.template == "r1_zero":
            return format_r1_zero(record["prompt"], _template_language(record))
        if self.template == "raw":
            return record["prompt"]
        msgs = record.get("messages") or [{"role": "user", "content": record["prompt"]}]
        return self.chat.render(msgs, add_generation_prompt=True)


def _template_language(record: dict[str, Any]) -> str:
    """The record's ``language`` field when it has an R1-Zero template, else English (a
    language without a template of its own, e.g. "fr", is asked in English)."""
    language = record.get("language") or "en"
    return language if language in R1_ZERO_TEMPLATES else "en"


def encode_prompt(tokenizer: Tokenizer, text: str, *, add_bos: bool = True) -> list[int]:
    """Prompt ids; no second BOS when the rendered text already starts with the BOS token."""
    bos_token = getattr(tokenizer, "bos_token", None)
    starts_with_bos = bool(bos_token) and text.startswith(bos_token)
    return tokenizer.encode(text, add_bos=add_bos and not starts_with_bos)


def build_sft_example(
    tokenizer: Tokenizer,
    prompt: str,
    think: str | None = None,
    answer: str | None = None,
    *,
    completion: str | None = None,
    template: str | Callable[[dict[str, Any]], str] = "r1_zero",
    add_bos: bool = True,
    add_eos: bool = True,
) -> dict[str, np.ndarray]:
    """Tokens and completion-only loss mask of one SFT example.

    ``prompt`` is the question (templated with ``template``); the target is ``completion`` if
    given, else :func:`format_completion` of ``think`` and ``answer``. Returns
    ``{"tokens": int32[T], "loss_mask": int32[T]}`` with ``loss_mask == 1`` on exactly the
    completion tokens and the final eos, 0 on the BOS and the prompt.
    """
    if completion is None:
        if think is None or answer is None:
            raise ValueError("build_sft_example needs think and answer, or completion")
        completion = format_completion(think, answer)
    prompt_text = PromptFormatter(template, tokenizer)({"prompt": prompt})
    return sft_tokens(tokenizer, prompt_text, completion, add_bos=add_bos, add_eos=add_eos)


def sft_tokens(
    tokenizer: Tokenizer, prompt_text: str, completion: str, *, add_bos: bool, add_eos: bool
) -> dict[str, np.ndarray]:
    """Tokenise an already-templated prompt and its completion; see :func:`build_sft_example`."""
    prompt_ids = encode_prompt(tokenizer, prompt_text, add_bos=add_bos)
    completion_ids = tokenizer.encode(completion)
    if add_eos:
        if tokenizer.eos_id is None:
            raise ValueError(f"{tokenizer!r} has no eos token; pass add_eos=False")
        completion_ids.append(tokenizer.eos_id)
    tokens = np.asarray(prompt_ids + completion_ids, dtype=np.int32)
    loss_mask = np.zeros(len(tokens), dtype=np.int32)
    loss_mask[len(prompt_ids) :] = 1
    return {"tokens": tokens, "loss_mask": loss_mask}
