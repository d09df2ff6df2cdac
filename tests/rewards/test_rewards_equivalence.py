"""Math equivalence: true and false pairs, percent settings, exactness, tautologies."""

import time

import pytest

from r1jax.rewards import answers_equivalent, normalize_answer

TRUE_PAIRS = [
    ("1/2", "0.5"),
    (r"\frac{1}{2}", "0.5"),
    (r"\dfrac{3}{4}", "0.75"),
    (r"\frac{\sqrt{3}}{2}", r"\sqrt{3}/2"),
    (r"\{1,2\}", r"\{2,1\}"),
    ("{1,2}", "{2,1}"),
    ("(1,2)", "(1, 2)"),
    ("[0,1)", "[0, 1)"),
    ("1,000", "1000"),
    ("1000000", "1,000,000"),
    ("42", "42.0"),
    ("-3", "-3.00"),
    (r"2\frac{1}{2}", "5/2"),  # mixed number
    (r"5\text{ cm}", "5"),  # unit
    ("3", "x = 3"),
    ("x=3", "3"),
    (r"2\pi", r"2 \pi"),
    (r"\pi", r"\frac{2\pi}{2}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("y=2x+1", "y=1+2x"),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1 & 2\\ 3 & 4\end{pmatrix}"),
    (r"\sqrt{8}", r"2\sqrt{2}"),
]

FALSE_PAIRS = [
    ("1/2", "2"),
    ("(1,2)", "(2,1)"),
    ("[0,1)", "[0,1]"),
    ("3", "3,4"),
    (r"\pi", "3.14"),
    ("0.0000001", "0.0000002"),  # no float-rounding tolerance to abuse
    ("1/3", "0.333"),
    ("x", "x = x"),  # tautology
    ("5", "5 = 5"),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&2\\3&5\end{pmatrix}"),
    ("x^2+1", "x^2-1"),
    ("2", ""),
    ("", ""),
]


@pytest.mark.parametrize("reference,candidate", TRUE_PAIRS)
def test_equivalent_pairs(reference, candidate):
    assert answers_equivalent(reference, candidate)


@pytest.mark.parametrize("reference,candidate", FALSE_PAIRS)
def test_different_pairs(reference, candidate):
    assert not answers_equivalent(reference, candidate)


@pytest.mark.parametrize(
    "reference,candidate,percent,expected",
    [
        (r"10\%", "0.1", "fraction", True),
        (r"10\%", "0.1", "number", False),
        (r"10\%", "0.1", "both", True),
        (r"10\%", "10", "fraction", False),
        (r"10\%", "10", "number", True),
        ("0.1", r"10\%", "fraction", True),
        ("10", r"10\%", "number", True),
        ("10", r"10\%", "fraction", False),
        (r"12.5\%", "1/8", "fraction", True),
    ],
)
def test_percent_setting(reference, candidate, percent, expected):
    assert answers_equivalent(reference, candidate, percent=percent) is expected


def test_bad_percent_setting_raises():
    with pytest.raises(ValueError, match="percent"):
        answers_equivalent("1", "1", percent="maybe")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reference,candidate",
    [
        ("1", r"10^{10^{10^{10}}}"),
        (r"10^{10^{10^{10}}}", r"10^{10^{10^{10}}} + 1"),
        ("x = 1", r"x^{999999999} = 1"),
        ("1", "2**3**4**5"),
        ("1", "1000000!"),
        ("1", "{" * 10_000 + "1" + "}" * 10_000),
        ("1", "1+" * 5000 + "1"),
    ],
)
def test_explosive_inputs_are_refused_fast(reference, candidate):
    start = time.monotonic()
    assert not answers_equivalent(reference, candidate, timeout=1.0)
    assert time.monotonic() - start < 1.5


def test_normalize_answer_keys():
    assert normalize_answer("0.50") == normalize_answer(r"\dfrac{1}{2}") == "1/2"
    assert normalize_answer("x = 1,000") == "1000"
    assert normalize_answer(r"\left( 1, 2 \right)") == "(1,2)"
    assert normalize_answer(r"5\text{ cm}") == "5"
    assert normalize_answer(None) == ""
    assert normalize_answer("3") != normalize_answer("4")
