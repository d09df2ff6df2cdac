"""Mathematical equivalence of two final answers, with `math-verify` as the engine.

`answers_equivalent(reference, candidate)` decides in three steps, cheapest first:

1. Identical canonical keys (`normalize_answer`) are equivalent; a tautological candidate such as
   ``x = x`` never is.
2. Plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``, mixed numbers, thousands
   separators, a trailing ``\\%``) are compared *exactly* as fractions, so ``0.0000001`` and
   ``0.0000002`` differ (no float-rounding tolerance to abuse).
3. Everything else (``\\sqrt``, π, sets, tuples, intervals, matrices, expressions, equations,
   ``\\text{}`` units, ``x = 3`` vs ``3``) goes to `math_verify.parse`/`verify` under a soft time
   limit, after input guards refuse what makes sympy explode: power towers, huge exponents or
   factorials, deep brace nests and over-long answers. The process pool adds the hard limit.

Percentages follow `percent`: ``"fraction"`` (``10\\%`` == ``0.1``), ``"number"``
(``10\\%`` == ``10``) or ``"both"`` (either; the default, as most graders do).
"""

from __future__ import annotations

import functools
import logging
import re
from fractions import Fraction
from typing import Literal

from r1jax.rewards import incidents
from r1jax.rewards.timelimit import soft_time_limit

PercentMode = Literal["fraction", "number", "both"]

MAX_ANSWER_CHARS = 400
MAX_BRACE_DEPTH = 24

_SPACES_RE = re.compile(r"(?<!\\)\\[,;:! ]|\\(?:quad|qquad)\b|\s+")
_DELIMS_RE = re.compile(r"\\left|\\right|\\displaystyle|\$")
_TRAILING_UNIT_RE = re.compile(r"(?<=[\d}])\\(?:text|mbox|mathrm)\{[^{}]*\}$")
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}$")
_ASSIGN_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?=(?!=)")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_SLASH_RE = re.compile(r"^([+-]?\d+)/(\d+)$")
_FRAC_RE = re.compile(r"^([+-]?)(\d+)?\\frac\{([+-]?\d+)\}\{(\d+)\}$")
_PERCENT_RE = re.compile(r"^(.*?)(?:\\%|%)$")

# Inputs that make sympy explode (huge integers, power towers) or recurse deeply.
_DANGER_RES = (
    re.compile(r"\^\s*\{[^{}]*\^"),  # 10^{10^{...}}: a power inside an exponent
    re.compile(r"\^\s*\(?[^{}()]*\^"),  # 2^(3^4), 2^3^4
    re.compile(r"\*\*[^*]*\*\*"),  # 2**3**4
    re.compile(r"(?:\^|\*\*)\s*[{(]?\s*[+-]?\d{4,}"),  # x^{999999999}: exponent >= 1000
    re.compile(r"\d{4,}\s*!|\\(?:binom|choose)\s*\{\s*\d{5,}"),  # 100000!, binomials of huge n
    re.compile(r"\d{200,}"),  # absurdly long literals
)


def _canonical_number(s: str) -> Fraction | None:
    """Exact value of a plain number string (after `_squash`), else None."""
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if _NUMBER_RE.match(s):
        return Fraction(s.rstrip(".") or "0")
    m = _SLASH_RE.match(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _FRAC_RE.match(s)
    if m and int(m.group(4)) != 0:
        sign, whole, num, den = m.groups()
        value = Fraction(int(num), int(den))
        if whole is not None:  # A mixed number: 2\frac{1}{2} is 5/2, as graders read it.
            value += int(whole)
        return -value if sign == "-" else value
    return None


def _squash(s: str) -> str:
    """Removes spacing, delimiters and presentation-only markup."""
    s = _DELIMS_RE.sub("", s)
    s = _SPACES_RE.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "")
    s = s.rstrip(".")
    m = _TEXT_WRAP_RE.match(s)
    if m:
        s = m.group(1)
    return _TRAILING_UNIT_RE.sub("", s)


def normalize_answer(s: str | None) -> str:
    """Canonical string key of an answer, for majority voting and cheap comparison.

    Cheap and string-level only (no sympy): spacing, ``\\left``/``\\right``, ``$``, ``\\dfrac``,
    a trailing unit in ``\\text{}``, a leading ``x =`` and thousands separators are dropped;
    plain numbers become reduced fractions (``0.5``, ``1/2`` and ``\\frac{1}{2}`` all map to
    ``"1/2"``). Answers equal only after algebra (``\\sqrt{3}/2`` vs ``\\frac{\\sqrt3}{2}``) keep
    different keys; group those with `answers_equivalent`.
    """
    if s is None:
        return ""
    s = _squash(s.strip())
    if _ASSIGN_RE.match(s) and s.count("=") == 1:
        s = s.split("=", 1)[1]
    value = _canonical_number(s)
    if value is not None:
        return str(value)
    return s


def _is_tautology(s: str) -> bool:
    parts = _squash(s).split("=")
    return len(parts) >= 2 and len({p for p in parts}) == 1 and parts[0] != ""


def _is_dangerous(s: str) -> bool:
    if len(s) > MAX_ANSWER_CHARS:
        return True
    depth = deepest = 0
    for ch in s:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth -= 1
    return deepest > MAX_BRACE_DEPTH or any(r.search(s) for r in _DANGER_RES)


def _percent_variants(s: str, mode: PercentMode) -> list[str]:
    m = _PERCENT_RE.match(s)
    if not m or not m.group(1):
        return [s]
    body = m.group(1)
    as_fraction = f"\\frac{{{body}}}{{100}}"
    value = _canonical_number(body)
    if value is not None:
        as_fraction = str(value / 100)
    return {"fraction": [as_fraction], "number": [body], "both": [as_fraction, body]}[mode]


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns that its own timeout is off; here the caller's limit applies instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


@functools.cache
def _quiet_math_verify() -> None:
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())


def _math_verify_equal(reference: str, candidate: str, float_rounding: int) -> bool:
    from math_verify import parse, verify  # Heavy import (sympy): only when needed.

    _quiet_math_verify()

    gold = parse(f"${reference}$", parsing_timeout=None)
    pred = parse(f"${candidate}$", parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, float_rounding=float_rounding, timeout_seconds=None))


def answers_equivalent(
    a: str | None,
    b: str | None,
    *,
    timeout: float = 2.0,
    percent: PercentMode = "both",
    float_rounding: int = 10,
) -> bool:
    """True when candidate `b` is mathematically the same answer as reference `a`.

    Never raises and never runs past `timeout` in Python code (main thread); see module doc.
    """
    if percent not in ("fraction", "number", "both"):
        raise ValueError(f"percent must be fraction|number|both, got {percent!r}")
    if not a or not b or not a.strip() or not b.strip():
        return False
    if _is_tautology(b) or _is_tautology(a):
        return False
    if normalize_answer(a) == normalize_answer(b):
        return True
    a_sq, b_sq = _squash(a), _squash(b)
    if _is_dangerous(a_sq) or _is_dangerous(b_sq):
        incidents.record("refused")
        return False
    pairs = [
        (x, y) for x in _percent_variants(a_sq, percent) for y in _percent_variants(b_sq, percent)
    ]
    try:
        with soft_time_limit(timeout):
            for ref, cand in pairs:
                ref_num, cand_num = _canonical_number(ref), _canonical_number(cand)
                if ref_num is not None and cand_num is not None:
                    if ref_num == cand_num:
                        return True
                    continue  # Exact numbers: no tolerance, no need for sympy.
                if ref == cand or _math_verify_equal(ref, cand, float_rounding):
                    return True
    except TimeoutError:
        incidents.record("timeout")
    except Exception:  # noqa: BLE001 - the engine's failure must not reach the trainer.
        incidents.record("error")
    return False
