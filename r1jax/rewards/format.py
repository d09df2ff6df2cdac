"""Format rewards for the R1 template ``<think> ... </think> <answer> ... </answer>``.

Whitespace policy: whitespace before, between and after the two blocks is fine (the R1-Zero
prompt ends with "Assistant:" and completions often start with a space or newline); any other
text outside the blocks is not. A prompt that already ends with ``<think>`` (R1's chat template)
opens the think block for the completion, so the completion then starts inside it.

Strict format (`is_well_formed`): exactly one of each of the four tags, in order, nothing but
whitespace outside, a non-empty answer, and no other tag-like ``<think``/``<answer`` variants
(``<answer value="42">``, ``<Think>``, ``</answer >``) anywhere.
"""

from __future__ import annotations

import dataclasses
import re

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_TAGLIKE_RE = re.compile(r"</?\s*(?:think|answer)\b[^>]*>?", re.IGNORECASE)


def _with_opened_think(prompt: str, completion: str) -> str:
    if prompt.rstrip().endswith("<think>") and not completion.lstrip().startswith("<think>"):
        return "<think>" + completion
    return completion


def is_well_formed(completion: str) -> bool:
    """True iff `completion` is exactly ``<think>…</think><answer>…</answer>`` (see module doc)."""
    tags = _TAGLIKE_RE.findall(completion)
    if tags != list(TAGS):
        return False  # Missing, repeated, nested, misordered or decorated tags.
    text = completion.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    between = text[text.index("</think>") + len("</think>") : text.index("<answer>")]
    answer = text[text.index("<answer>") + len("<answer>") : -len("</answer>")]
    return not between.strip() and bool(answer.strip())


def tag_count_score(completion: str) -> float:
    """Partial credit in [0, 1]: 0.25 per tag present exactly once, in the strict-format order.

    A tag counts when it occurs exactly once and after the tags before it in ``TAGS``; trailing
    non-whitespace text after ``</answer>`` costs 0.25. Decorated tag variants earn nothing.
    """
    exact = [t for t in _TAGLIKE_RE.findall(completion) if t in TAGS]
    score = 0.0
    last_pos = -1
    for tag in TAGS:
        if exact.count(tag) != 1:
            continue
        pos = completion.find(tag)
        if pos > last_pos:
            score += 0.25
            last_pos = pos
    close = completion.rfind("</answer>")
    if close >= 0 and completion[close + len("</answer>") :].strip():
        score -= 0.25
    return max(score, 0.0)


@dataclasses.dataclass(frozen=True)
class FormatReward:
    """1.0 for a well-formed R1 completion, else 0.0 (registry name ``"format"``)."""

    score_range = (0.0, 1.0)  # every score it gives lies here

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        return [
            float(is_well_formed(_with_opened_think(p, c)))
            for p, c in zip(prompts, completions, strict=True)
        ]


@dataclasses.dataclass(frozen=True)
class TagCountReward:
    """Partial format credit, `tag_count_score` (registry name ``"tag_count"``)."""

    score_range = (0.0, 1.0)  # every score it gives lies here

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        return [
            tag_count_score(_with_opened_think(p, c))
            for p, c in zip(prompts, completions, strict=True)
        ]
