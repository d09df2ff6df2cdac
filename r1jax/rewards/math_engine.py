"""The math engine of `r1jax.rewards.equivalence`: `math_verify` reading each answer whole and
comparing exactly wherever both sides are exact numbers.

`engine_equivalent(pairs)` is unguarded and runs in whatever process calls it: the caller adds
the time limit (`answers_equivalent` sends it to a `r1jax.rewards.hard_limit` worker). An answer
the LaTeX parser reads only in part is unreadable (never paid); two exact numbers (no decimal on
either side, at any magnitude) are compared exactly, replacing math-verify's float-rounded
numeric test; a float tolerance is left only where one side is a decimal and the other
irrational.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns that its own timeout is off; here the caller's limit applies instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


@functools.cache
def _quiet_math_verify() -> None:
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())


def _balanced(s: str) -> bool:
    depth = 0
    for m in re.finditer(r"\\[{}]|[{}]", s):
        if len(m.group()) == 1:
            depth += 1 if m.group() == "{" else -1
            if depth < 0:
                return False
    return depth == 0


def _parse_whole(s: str) -> list | None:
    """math-verify's reading of all of `s` as [expr, text], or None if only a part is readable.

    Uses math-verify's normalization and LaTeX parser directly, without its extraction (which
    falls back to whatever part of a text it can read: ``5+\\frac{1}{\\foo{2}}`` as ``5``).
    """
    from latex2sympy2_extended import latex2sympy
    from math_verify import LatexExtractionConfig
    from math_verify.parser import normalize_latex, should_treat_as_complex

    normalized = normalize_latex(s, config=LatexExtractionConfig().normalization_config).strip()
    if not normalized or not _balanced(normalized) or normalized[-1] in "{^_+-*/=\\":
        return None  # Normalization or the text itself stops mid-expression.
    try:
        expr = latex2sympy(
            normalized,
            is_real=not should_treat_as_complex(normalized),
            convert_degrees=False,
            normalization_config=None,
        )
    except Exception:  # noqa: BLE001 - unreadable as a whole: never compared by a part.
        return None
    return [expr, normalized]


def _exact_value(x):
    """`x` as an exact sympy number, a Rational for a plain decimal, or None (symbolic)."""
    import sympy

    if not isinstance(x, sympy.Expr) or x.free_symbols or not x.is_number:
        return None
    x = x.doit()
    if isinstance(x, sympy.Float):
        return sympy.Rational(str(x))  # The decimal as written: 0.1 is 1/10.
    if x.has(sympy.Float):
        return None  # Inexact arithmetic (0.5\sqrt{2}): leave it to the tolerance.
    return x


def _exact_verdict(gold, pred) -> bool | None:
    """True/False for two exact numbers, compared exactly; None where a tolerance belongs.

    Rationals (at any magnitude) compare as fractions. Other exact numbers are equal only when
    sympy proves their difference zero; a 60-digit evaluation only tells them apart faster.
    """
    import sympy

    a, b = _exact_value(gold), _exact_value(pred)
    if a is None or b is None:
        return None
    if a.is_Rational and b.is_Rational:
        return bool(a == b)
    if sympy.Float in (type(gold.doit()), type(pred.doit())):
        return None  # A decimal against an irrational: an approximation, within the tolerance.
    if not (a.is_finite and b.is_finite):
        # oo and -oo equal themselves; zoo and nan (12:00 read as 12/0) equal nothing.
        return bool(a == b and a.is_extended_real)
    difference = a - b
    if difference == 0:
        return True
    approx = difference.evalf(60)
    if approx.is_number and abs(approx) > sympy.Float(10) ** -40 * max(abs(a.evalf(60)), 1):
        return False
    return bool(sympy.simplify(difference) == 0)  # Only a proof pays; 2^(2^-1000) is not 1.


def _exact_numeric_eq(a, b) -> bool | None:
    """math-verify's numeric test, for two Float-free expressions: exact, never rounded.

    Its test evaluates ``a - b`` with small values chopped to zero, which pays ``x = 2^{-99}``
    against ``x = 2^{-98}``; without a decimal on either side nothing is approximate, so numbers
    compare exactly and symbolic expressions are left to the symbolic test (False here).
    """
    import sympy

    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return None
    if a.has(sympy.Float) or b.has(sympy.Float):
        return None
    verdict = _exact_verdict(a, b)
    return False if verdict is None else verdict


@contextlib.contextmanager
def _exact_numbers():
    """math-verify compares exact numbers exactly while in this block (its recursion included)."""
    import math_verify.grader as grader

    original_expr_eq, original_numeric_eq = grader.sympy_expr_eq, grader.sympy_numeric_eq

    def sympy_expr_eq(gold, pred, *args, **kwargs):
        try:
            verdict = _exact_verdict(gold, pred)
        except Exception:  # noqa: BLE001 - not comparable exactly: math-verify decides.
            verdict = None
        return original_expr_eq(gold, pred, *args, **kwargs) if verdict is None else verdict

    def sympy_numeric_eq(a, b, *args, **kwargs):
        try:
            verdict = _exact_numeric_eq(a, b)
        except Exception:  # noqa: BLE001
            verdict = None
        return original_numeric_eq(a, b, *args, **kwargs) if verdict is None else verdict

    grader.sympy_expr_eq, grader.sympy_numeric_eq = sympy_expr_eq, sympy_numeric_eq
    try:
        yield
    finally:
        grader.sympy_expr_eq, grader.sympy_numeric_eq = original_expr_eq, original_numeric_eq


def _math_verify_equal(reference: str, candidate: str, float_rounding: int) -> bool:
    from math_verify import verify  # Heavy import (sympy): only when needed.

    _quiet_math_verify()
    gold, pred = _parse_whole(reference), _parse_whole(candidate)
    if not gold or not pred:
        return False
    with _exact_numbers():
        return bool(verify(gold, pred, float_rounding=float_rounding, timeout_seconds=None))


def engine_equivalent(pairs: list[tuple[str, str]], float_rounding: int = 10) -> bool:
    """The engine alone, in this process, unguarded: True if any (reference, candidate) matches."""
    return any(_math_verify_equal(ref, cand, float_rounding) for ref, cand in pairs)
