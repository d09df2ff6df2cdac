"""Language consistency of the chain of thought, by Unicode script [R1].

R1 adds to the accuracy reward the proportion of chain-of-thought words in the target language,
which stops the policy mixing languages. Words are counted by script: a run of Latin, Cyrillic,
Greek, Arabic, Hebrew, Devanagari, Thai or Hangul letters is one word; Chinese has no spaces, so
each Han character is one word, and so is each kana character. LaTeX commands (``\\frac``), digits,
punctuation and maths are not words. Greek letters are neutral unless the target is Greek, since
maths uses them (π, θ) in every language.
"""

from __future__ import annotations

import dataclasses
import re

from r1jax.rewards.extract import thinking_region

_SCRIPTS = {
    "latin": r"[A-Za-z\u00C0-\u024F]+",
    "han": r"[\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF\U00020000-\U0002A6DF]",
    "kana": r"[\u3040-\u30FF]",
    "hangul": r"[\uAC00-\uD7AF\u1100-\u11FF\u3130-\u318F]+",
    "cyrillic": r"[\u0400-\u04FF]+",
    "greek": r"[\u0370-\u03FF]+",
    "arabic": r"[\u0600-\u06FF]+",
    "hebrew": r"[\u0590-\u05FF]+",
    "devanagari": r"[\u0900-\u097F]+",
    "thai": r"[\u0E00-\u0E7F]+",
}
_WORD_RE = re.compile(
    r"\\[A-Za-z]+|" + "|".join(f"(?P<{name}>{pattern})" for name, pattern in _SCRIPTS.items())
)

# Target language -> scripts whose words count as "in the language".
LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    **{lang: frozenset({"latin"}) for lang in ("en", "fr", "de", "es", "it", "pt", "nl", "vi")},
    "zh": frozenset({"han"}),
    "ja": frozenset({"han", "kana"}),
    "ko": frozenset({"hangul", "han"}),
    "ru": frozenset({"cyrillic"}),
    "uk": frozenset({"cyrillic"}),
    "el": frozenset({"greek"}),
    "ar": frozenset({"arabic"}),
    "he": frozenset({"hebrew"}),
    "hi": frozenset({"devanagari"}),
    "th": frozenset({"thai"}),
}


def script_word_counts(text: str) -> dict[str, int]:
    """Number of words per script in `text` (LaTeX commands skipped)."""
    counts: dict[str, int] = {}
    for match in _WORD_RE.finditer(text):
        script = match.lastgroup
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    return counts


def language_consistency(text: str, language: str = "en") -> float:
    """Fraction of the words of `text` written in `language`'s script(s); 0.0 with no words."""
    if language not in LANGUAGE_SCRIPTS:
        raise ValueError(
            f"language_consistency: unknown language {language!r}; "
            f"known: {sorted(LANGUAGE_SCRIPTS)}"
        )
    targets = LANGUAGE_SCRIPTS[language]
    counts = script_word_counts(text)
    if language != "el":
        counts.pop("greek", None)
    total = sum(counts.values())
    if total == 0:
        return 0.0  # No reasoning at all is not consistent reasoning.
    return sum(n for script, n in counts.items() if script in targets) / total


@dataclasses.dataclass(frozen=True)
class LanguageReward:
    """Language consistency of the chain of thought (registry name ``"language"``).

    The target is the example's ``language`` field when given, else `language`. The chain of
    thought is the first think block (or, without tags, the whole completion).
    """

    language: str = "en"

    def __post_init__(self):
        if self.language not in LANGUAGE_SCRIPTS:
            raise ValueError(f"LanguageReward: unknown language {self.language!r}")

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        languages = fields.get("language") or [self.language] * len(completions)
        return [
            language_consistency(thinking_region(c), lang or self.language)
            for c, lang in zip(completions, languages, strict=True)
        ]
