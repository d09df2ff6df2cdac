"""Language consistency of the chain of thought, by Unicode script [R1].

R1 adds to the accuracy reward the proportion of chain-of-thought words in the target language,
which stops the policy mixing languages. Words are counted by script: a run of Latin, Cyrillic,
Greek, Arabic, Hebrew, Devanagari, Thai or Hangul letters is one word; Chinese has no spaces, so
each Han character is one word, and so is each kana character. LaTeX commands (``\\frac``), digits,
punctuation and maths are not words. Greek letters are neutral unless the target is Greek, since
maths uses them (π, θ) in every language.

Maths written in Latin letters is in no language either, so a Chinese derivation full of
variables is not "mixed": inline maths (``$...$``, ``\\(...\\)``, ``\\[...\\]``) is skipped, and
a Latin word is neutral when it is a single letter (x, n), a short all-capitals name (AB, ABC),
touches a digit or an operator (2x, x2, x^2, f(x) -> f), or is a function or unit name
(``MATH_WORDS``: sin, log, gcd, cm, kg, ...).
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

_MATH_OPENER_RE = re.compile(r"\$|\\\(|\\\[")
_MATH_CLOSERS = {"\\(": "\\)", "\\[": "\\]", "$$": "$$"}
# Function, operator and unit names that maths writes in Latin letters in every language.
MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp lim max min "
    "gcd lcm mod sqrt det deg rad abs floor ceil sgn mm cm km kg mg ml mol hz kb mb gb km/h "
    "mph sec hr".split()
)
_OPERATORS = set("0123456789+-*/=^_()<>[]{}|'")


def _is_math_word(text: str, start: int, end: int) -> bool:
    """Whether the Latin word ``text[start:end]`` is maths (see the module docstring)."""
    word = text[start:end]
    if len(word) == 1 or word.lower() in MATH_WORDS or (word.isupper() and len(word) <= 3):
        return True
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    return before in _OPERATORS or after in _OPERATORS


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


def without_math(text: str) -> str:
    """`text` with each maths span (``$$...$$``, ``$...$`` within a line, ``\\(...\\)``,
    ``\\[...\\]``) replaced by a space: ``re.sub`` of their alternation, leftmost first, in
    linear time (the regex rescanned to the end from every unclosed opener)."""
    out, pos, unclosed = [], 0, set()
    while (m := _MATH_OPENER_RE.search(text, pos)) is not None:
        start, end = m.start(), None
        opener = "$$" if text.startswith("$$", start) else m.group()
        if opener in _MATH_CLOSERS and opener not in unclosed:
            close = text.find(_MATH_CLOSERS[opener], start + 2)
            if close >= 0:
                end = close + 2
            else:  # no later opener of this kind closes either
                unclosed.add(opener)
        if end is None and opener in ("$", "$$"):  # inline: the next $ on the same line
            close = text.find("$", start + 1)
            if close >= 0 and text.find("\n", start + 1, close) < 0:
                end = close + 1
        if end is None:
            out.append(text[pos : start + 1])
            pos = start + 1
        else:
            out.append(text[pos:start] + " ")
            pos = end
    return "".join(out) + text[pos:]


def script_word_counts(text: str) -> dict[str, int]:
    """Number of words per script in `text` (LaTeX commands, inline maths and maths words in
    Latin letters skipped)."""
    text = without_math(text)
    counts: dict[str, int] = {}
    for match in _WORD_RE.finditer(text):
        script = match.lastgroup
        if script == "latin" and _is_math_word(text, *match.span()):
            continue
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

    score_range = (0.0, 1.0)  # every score it gives lies here

    def __post_init__(self):
        if self.language not in LANGUAGE_SCRIPTS:
            raise ValueError(f"LanguageReward: unknown language {self.language!r}")

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        languages = fields.get("language") or [self.language] * len(completions)
        return [
            language_consistency(thinking_region(c), lang or self.language)
            for c, lang in zip(completions, languages, strict=True)
        ]
