"""Mathematical equivalence of two final answers, with `math-verify` as the engine.

`answers_equivalent(reference, candidate)` decides in three steps, cheapest first:

1. Identical canonical keys (`normalize_answer`) are equivalent; a tautological candidate such as
   ``x = x`` never is.
2. Plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``, mixed numbers ``2\\frac{1}{2}`` and
   ``4 4/9``, thousands separators ``1,000``, ``1{,}000``, ``1\\,000``, ``1 000``, a trailing
   ``\\%``, a ``\\$``) are compared *exactly* as fractions, so ``0.0000001`` and ``0.0000002``
   differ. Spacing is read, not deleted: ``32, 349`` is a list of two numbers, never ``32349``, and
   digits split by a bare space (``2 3``) are no number at all.
3. Everything else (``\\sqrt``, π, sets, tuples, intervals, matrices, expressions, equations,
   ``\\text{}`` units, ``x = 3`` vs ``3``) goes to the engine: `math_verify` parses each answer
   *whole* (an answer it reads only a prefix of, e.g. ``1-\\frac{1}{\\mathrm{e}}`` read as ``1``,
   counts as unreadable and is never paid) and `math_verify.verify` compares them, except that two
   exact numbers (no decimal on either side: ``\\frac{1}{2^{99}}``, ``\\sqrt{8}``, ``\\pi``, at any
   magnitude) are compared exactly, and a decimal against a rational number too; a float tolerance
   (`float_rounding` digits) is left only where one side is a decimal and the other irrational.

The engine runs under a hard limit (`r1jax.rewards.hard_limit`): in a persistent worker process
that is killed past `timeout` seconds, so a call returns within ``timeout`` plus a few
milliseconds, whatever the input (a long C call in sympy included). Input guards first refuse what
is explosive and pointless to try (numeric power towers, exponents or factorial arguments of five
digits and more, factorials of powers, deep brace nests, over-long answers). Inside a daemonic
process (a `RewardPool` worker, which may not start children) the engine runs in-process under the
soft `soft_time_limit`, and the pool's own per-job kill is the hard limit.

Percentages follow `percent`: ``"fraction"`` (``10\\%`` == ``0.1``), ``"number"``
(``10\\%`` == ``10``) or ``"both"`` (either; the default, as most graders do).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

from r1jax.rewards import incidents
from r1jax.rewards.math_engine import engine_equivalent
from r1jax.rewards.timelimit import soft_time_limit

PercentMode = Literal["fraction", "number", "both"]

MAX_ANSWER_CHARS = 600
MAX_BRACE_DEPTH = 24
MAX_NUMBER_CHARS = 120
DEFAULT_TIMEOUT = 0.75  # Engine limit (s); with the worker's overhead a call stays under 1 s.

_DELIMS_RE = re.compile(r"\\left\b|\\right\b|\\displaystyle|\\?\$")
_GLUE_RE = re.compile(r"\\!\s*")  # Negative thin space: glue (as in 11,\!111).
_SPACES_RE = re.compile(r"(?<!\\)\\[,;: ]|\\(?:quad|qquad)\b|~|\s+")
_GAP_RE = re.compile(r" +")
_EULER_RE = re.compile(r"\\(?:mathrm|text|operatorname)\{e\}")
# A trailing unit: letters, ``/``, ``.`` and exponents (cm^2, km/h), never another number
# (``\text{ or 6}``, ``\text{ (maybe 3)}`` stay: a second value is no unit).
_TRAILING_UNIT_RE = re.compile(
    r"(?<=[\d}])\\(?:text|mbox|mathrm)\{(?:[A-Za-z\s/.°-]|\^\{?\d+\}?)*\}$"
)
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}$")
_ASSIGN_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?=(?!=)")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?:\.\d+)?$")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_SLASH_RE = re.compile(r"^([+-]?\d+)/(\d+)$")
_MIXED_SLASH_RE = re.compile(r"^([+-]?)(\d+) (\d+)/(\d+)$")
_FRAC_RE = re.compile(r"^([+-]?)(\d+)?\\frac\{([+-]?\d+)\}\{(\d+)\}$")
_PERCENT_RE = re.compile(r"^(.*?)(?:\\%|%)$")
_SPLIT_DIGITS_RE = re.compile(r"([\d.]+) \d")  # 2 3, 2.5 3; not 2^6 3^5 (an exponent)
# No leading \s*: searched unanchored, it made a long run of spaces quadratic.
_PERCENT_WORD_RE = re.compile(r"(?:\\text\{\s*)?(?:percent(?:age)?|pct)\s*\}?\s*$")

# Inputs that make sympy explode (huge integers, power towers) or recurse deeply. Ordinary
# powers, including several in one equation (x^2/4+y^2/3=1) and symbolic towers (e^{x^2}), pass.
_DANGER_RES = (
    # 10^{10^{10}}, (9^9)^{9^9}
    re.compile(r"[\d)}]\s*(?:\^|\*\*)\s*[{(]?\s*[+-]?\d+(?:\.\d+)?\s*(?:\^|\*\*)"),
    re.compile(r"(?:\^|\*\*)\s*[{(]?\s*[+-]?\d{5,}"),  # x^{999999999}: exponent >= 10000
    re.compile(r"\d{5,}\s*!|\\(?:binom|choose)\s*\{\s*\d{5,}"),  # 100000!, huge binomials
    re.compile(r"\d{200,}"),  # absurdly long literals
)
_FACTORIAL_RE = re.compile(r"(?<!\\)!(?!=)")
_BRACKETED_NUMBER_RE = re.compile(r"[({]\s*([+-]?\d+(?:\.\d+)?)\s*[)}]")  # (9), {9}
_HEAVY_OPERAND_RE = re.compile(r"\^|\*\*|!|\d{5,}")


def _close_gap(m: re.Match) -> str:
    """A run of spaces survives (as one) only between digits, or after a comma before a digit."""
    s, i, j = m.string, m.start(), m.end()
    if 0 < i and j < len(s) and s[j].isdigit() and (s[i - 1].isdigit() or s[i - 1] == ","):
        return " "
    return ""


def _squash(s: str) -> str:
    """Canonical spacing and presentation: delimiters, ``\\$``, markup and units dropped."""
    s = _DELIMS_RE.sub("", s)
    word = _PERCENT_WORD_RE.search(s)
    if word:
        s = s[: word.start()].rstrip() + "\\%"
    s = s.replace("{,}", ",")
    s = _GLUE_RE.sub("", s)
    s = _SPACES_RE.sub(" ", s).strip()
    s = _GAP_RE.sub(_close_gap, s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "")
    s = _EULER_RE.sub("e", s)
    s = s.rstrip(".")
    m = _TEXT_WRAP_RE.match(s)
    if m:
        s = m.group(1).strip()
    return _TRAILING_UNIT_RE.sub("", s)


def _canonical_number(s: str) -> Fraction | None:
    """Exact value of a plain number string (after `_squash`), else None."""
    if len(s) > MAX_NUMBER_CHARS:
        return None  # Not a number anyone writes; and int() refuses over 4300 digits.
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "").replace(" ", "")
    if _NUMBER_RE.match(s):
        return Fraction(s.rstrip(".") or "0")
    m = _SLASH_RE.match(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _MIXED_SLASH_RE.match(s)
    if m and 0 < int(m.group(3)) < int(m.group(4)):  # 4 4/9 is 40/9, a proper mixed number.
        sign, whole, num, den = m.groups()
        value = int(whole) + Fraction(int(num), int(den))
        return -value if sign == "-" else value
    m = _FRAC_RE.match(s)
    if m and int(m.group(4)) != 0:
        sign, whole, num, den = m.groups()
        value = Fraction(int(num), int(den))
        if whole is not None:  # A mixed number: 2\frac{1}{2} is 5/2, as graders read it.
            value += int(whole)
        return -value if sign == "-" else value
    return None


def normalize_answer(s: str | None) -> str:
    """Canonical string key of an answer, for majority voting and cheap comparison.

    Cheap and string-level only (no sympy): spacing, ``\\left``/``\\right``, ``$``, ``\\$``,
    ``\\dfrac``, a trailing unit in ``\\text{}``, a leading ``x =`` and thousands separators are
    dropped; plain numbers become reduced fractions (``0.5``, ``1/2`` and ``\\frac{1}{2}`` all map
    to ``"1/2"``, ``4 4/9`` to ``"40/9"``). Spacing that matters is kept apart: ``32, 349`` keys
    as ``"32,349"``, never as the number ``32349``. Answers equal only after algebra
    (``\\sqrt{3}/2`` vs ``\\frac{\\sqrt3}{2}``) keep different keys; group those with
    `answers_equivalent`.
    """
    if s is None:
        return ""
    if len(s) > 4 * MAX_ANSWER_CHARS:
        return s.strip()  # No answer anyone writes: not worth a canonical form.
    s = _squash(s.strip())
    if _ASSIGN_RE.match(s) and s.count("=") == 1:
        s = s.split("=", 1)[1]
    value = _canonical_number(s)
    if value is not None:
        return str(value)
    return s.replace(", ", ",")


def _is_tautology(s: str) -> bool:
    parts = _squash(s).split("=")
    return len(parts) >= 2 and len(set(parts)) == 1 and parts[0] != ""


def _factorial_operands(s: str):
    """The operand text of each ``!`` in `s`: a number, a word, or a bracketed group."""
    for m in _FACTORIAL_RE.finditer(s):
        end = m.start()
        if end and s[end - 1] in ")}]":
            depth, i = 0, end - 1
            while i >= 0:
                depth += s[i] in ")}]"
                depth -= s[i] in "({["
                if depth == 0:
                    break
                i -= 1
            yield s[max(i, 0) : end]
        elif end and s[end - 1] == "!":
            yield "!"  # (9!)!, 9!!!: a factorial of a factorial
        else:
            yield re.search(r"[\w.]*$", s[:end]).group()


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
    bare, previous = s, None
    while bare != previous:  # (9)^{(9)^{9}} -> 9^{9^9}: brackets around numbers hide nothing
        previous, bare = bare, _BRACKETED_NUMBER_RE.sub(r"\1", bare)
    if deepest > MAX_BRACE_DEPTH or any(r.search(bare) for r in _DANGER_RES):
        return True
    # (10^{9})!, (5!)!!: a factorial of a power, of a factorial or of a huge literal.
    return any(_HEAVY_OPERAND_RE.search(op) for op in _factorial_operands(s))


def _has_split_digits(s: str) -> bool:
    """Digits split by a bare space (``2 3``), other than after an exponent or index (``2^6 3``)."""
    return any(m.start() == 0 or s[m.start() - 1] not in "^_" for m in _SPLIT_DIGITS_RE.finditer(s))


def _engine_text(s: str, value: Fraction | None) -> str:
    """A spaced number (``1\\,000``, ``4 4/9``) reaches sympy as its value; the rest as written."""
    return str(value) if value is not None and (" " in s or "," in s) else s


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


# --- The engine: math-verify on whole answers, exact on exact numbers. Runs in the worker. ---


def _engine_in_process(pairs, float_rounding: int, timeout: float) -> bool:
    try:
        with soft_time_limit(timeout):
            return engine_equivalent(pairs, float_rounding)
    except TimeoutError:
        incidents.record("timeout")
    except Exception:  # noqa: BLE001 - the engine's failure must not reach the trainer.
        incidents.record("error")
    return False


def answers_equivalent(
    a: str | None,
    b: str | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    percent: PercentMode = "both",
    float_rounding: int = 10,
    isolate: bool | None = None,
) -> bool:
    """True when candidate `b` is mathematically the same answer as reference `a`.

    Never raises. The engine runs under a hard limit of `timeout` seconds in a worker process
    (`isolate=None`: whenever this process may start one; False: in-process under the soft
    limit only); see the module doc.
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
    engine_pairs = []
    for ref in _percent_variants(a_sq, percent):
        for cand in _percent_variants(b_sq, percent):
            ref_num, cand_num = _canonical_number(ref), _canonical_number(cand)
            if ref_num is not None and cand_num is not None:
                if ref_num == cand_num:
                    return True
                continue  # Exact numbers: no tolerance, no need for sympy.
            if ref == cand:
                return True
            ref, cand = _engine_text(ref, ref_num), _engine_text(cand, cand_num)
            if _has_split_digits(ref) or _has_split_digits(cand):
                continue  # "2 3" is no number: never read as a product or joined digits.
            engine_pairs.append((ref, cand))
    if not engine_pairs:
        return False
    from r1jax.rewards import hard_limit

    if isolate is None:
        isolate = hard_limit.isolation_available()
    if not isolate:
        return _engine_in_process(engine_pairs, float_rounding, timeout)
    result = hard_limit.call_with_hard_limit(
        engine_equivalent, engine_pairs, float_rounding, timeout=timeout
    )
    if result.status == "unavailable":
        return _engine_in_process(engine_pairs, float_rounding, timeout)
    if result.status != "ok":
        incidents.record(result.status)
        return False
    return bool(result.value)
