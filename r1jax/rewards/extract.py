"""Final-answer extraction from R1-style completions.

Only the *final answer* counts. The chain of thought is everything up to the last `</think>`
(or the whole completion while a `<think>` is still open); boxes and answer blocks in it are
ignored. In the remaining text, by mode:

- ``"boxed"``: the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces;
- ``"answer_tag"``: the content of the single ``<answer>...</answer>`` block (a box inside it wins);
- ``"gsm8k"``: the text after the last ``#### `` marker, up to the end of its line;
- ``"auto"`` (default): answer block, else box, else ``####``.

Hedging is refused: several *different* boxed answers (compared with `normalize_answer`), several
answer blocks, or a box with unbalanced braces give ``None``. Scanning is iterative and linear in
the completion length, so a 10,000-deep brace nest or a 100k-character completion is cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

ExtractMode = Literal["auto", "boxed", "answer_tag", "gsm8k"]

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_BLOCK_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K_RE = re.compile(r"####[ \t]*([^\n]*)")
_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


def final_region(completion: str) -> str | None:
    """Returns the text after the chain of thought, or None while a `<think>` is unclosed."""
    close = completion.rfind(_THINK_CLOSE)
    if close >= 0:
        return completion[close + len(_THINK_CLOSE) :]
    if _THINK_OPEN in completion:
        return None  # Still thinking: nothing in here is a final answer.
    return completion


def thinking_region(completion: str) -> str:
    """Returns the chain of thought: the text of the first think block (or up to `</think>`)."""
    close = completion.find(_THINK_CLOSE)
    open_ = completion.find(_THINK_OPEN)
    start = open_ + len(_THINK_OPEN) if 0 <= open_ and (close < 0 or open_ < close) else 0
    end = close if close >= start else len(completion)
    return completion[start:end]


def find_boxed(text: str) -> list[str] | None:
    """Contents of every `\\boxed{}`/`\\fbox{}` in `text`, or None if any box is unbalanced."""
    contents = []
    pos = 0
    while True:
        match = _BOX_RE.search(text, pos)
        if match is None:
            return contents
        start = match.end()
        depth = 1
        i = start
        n = len(text)
        while i < n and depth:
            ch = text[i]
            if ch == "\\" and i + 1 < n and text[i + 1] in "{}":
                i += 2  # An escaped brace (`\{`) does not open or close a group.
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            i += 1
        if depth:
            return None
        contents.append(text[start : i - 1].strip())
        pos = i


def _single_boxed(text: str, key: Callable[[str], str]) -> str | None:
    boxes = find_boxed(text)
    if not boxes:
        return None
    if len({key(b) for b in boxes}) > 1:
        return None  # Several different boxed answers: a hedge, not an answer.
    return boxes[-1] or None


def answer_blocks(text: str) -> list[str]:
    """The contents of each closed ``<answer>...</answer>`` in `text`, in order (what
    ``re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)`` gives, in linear time: that
    regex rescans to the end from every unclosed ``<answer>``)."""
    blocks, pos = [], 0
    while (start := text.find("<answer>", pos)) >= 0:
        end = text.find("</answer>", start + len("<answer>"))
        if end < 0:
            break
        blocks.append(text[start + len("<answer>") : end])
        pos = end + len("</answer>")
    return blocks


def _answer_block(text: str) -> str | None:
    if text.count("<answer>") != 1:
        return None
    blocks = answer_blocks(text)  # one at most: one "<answer>"
    return (blocks[0].strip() or None) if blocks else None


def extract_answer(completion: str, mode: ExtractMode = "auto") -> str | None:
    """Returns the final answer of `completion` as a string, or None if there is none.

    See the module docstring for the modes and the rules against hedged answers.
    """
    from r1jax.rewards.equivalence import normalize_answer  # Cheap string key, no sympy.

    region = final_region(completion)
    if region is None:
        return None
    if mode in ("auto", "answer_tag"):
        if "<answer>" in region or "</answer>" in region:
            block = _answer_block(region)
            if block is None:
                return None
            answer = _single_boxed(block, normalize_answer) if _BOX_RE.search(block) else block
            if answer is None or mode == "answer_tag":
                return answer
            # A different boxed answer outside the block (e.g. after `</answer>`) is a hedge.
            outside = find_boxed(_ANSWER_BLOCK_RE.sub(" ", region))
            if outside is None or any(
                normalize_answer(b) != normalize_answer(answer) for b in outside
            ):
                return None
            return answer
        if mode == "answer_tag":
            return None
    if mode in ("auto", "boxed"):
        if _BOX_RE.search(region):
            return _single_boxed(region, normalize_answer)
        if mode == "boxed":
            return None
    if mode in ("auto", "gsm8k"):
        found = _GSM8K_RE.findall(region)
        if found and found[-1].strip():
            return found[-1].strip()
        return None
    raise ValueError(f"extract_answer: unknown mode {mode!r}; expected auto|boxed|answer_tag|gsm8k")
