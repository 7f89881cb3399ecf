"""arith: a parser (never eval) for numbers, expressions and equations in model text."""

import os
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workcount import assert_linear, work

from supercorrect import arith
from supercorrect.arith import (
    MAX_LEN,
    ArithError,
    Equation,
    evaluate,
    find_equations,
    format_number,
    numbers_in,
    parse_number,
)

FUZZ = settings(
    max_examples=int(os.environ.get("SC_FUZZ_EXAMPLES", "200")),
    deadline=None,  # no clock in unit tests: the work bounds are counted below
    suppress_health_check=[HealthCheck.too_slow],
)
F = Fraction


# -- numbers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s,want",
    [
        ("12", F(12)), ("-3", F(-3)), ("1,234", F(1234)), ("3.50", F(7, 2)), ("$12", F(12)), ("-$3", F(-3)),
        ("$1,234.50", F(246900, 200)), ("50%", F(50)), (".5", F(1, 2)), ("1/2", F(1, 2)), ("-1/3", F(-1, 3)),
        (" 42 ", F(42)), ("12.", F(12)), ("−7", F(-7)),
        ("abc", None), ("", None), ("1/0", None), ("3 apples", None), ("1,2", None), ("--3", None),
        ("1" * 200, None), (None, None),
    ],
)  # fmt: skip
def test_parse_number(s, want):
    assert parse_number(s) == want


def test_numbers_in():
    text = "She had $1,234.50, spent 3-2 = 1 and owes -5; 1/2 of 40% is .2"
    assert numbers_in(text) == [F(123450, 100), 3, 2, 1, -5, 1, 2, 40, F(1, 5)]
    assert numbers_in("no numbers") == []
    assert numbers_in("9" * 5000 + " 7") == [7]  # beyond the size limit: skipped, no int-conversion error


@pytest.mark.parametrize(
    "x,want",
    [(F(12), "12"), (F(5, 2), "2.5"), (F(1, 3), "1/3"), (F(-5, 4), "-1.25"), (F(1, 64), "0.015625"),
     (F(1, 128), "1/128"), (F(0), "0"), (7, "7"), (F(-1, 3), "-1/3")],
)  # fmt: skip
def test_format_number(x, want):
    assert format_number(x) == want


@FUZZ
@given(st.fractions(max_denominator=10**6).filter(lambda x: abs(x) < 10**30))
def test_format_then_parse_round_trip(x):
    assert parse_number(format_number(x)) == x


# -- evaluate -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr,want",
    [
        ("3 * 4", 12), ("12 + 5", 17), ("48/2", 24), ("$3 x 4", 12), ("3x4", 12), ("3 × 4 ÷ 2", 6),
        ("2^3^2", 512), ("-2^2", -4), ("(-2)^2", 4), ("2**-1", F(1, 2)), ("1,234 + .5", F(2469, 2)),
        ("-(3 - 5)", 2), ("--3", 3), ("[1 + 2] * {3}", 9), ("10 - 2 - 3", 5), ("2 * 3 + 4 * 5", 26),
        ("50% * 20", 1000), ("\\frac{1}{3} \\times 3", 1), ("3 \\cdot 4 \\div 6", 2), ("\\left(1+2\\right)^2", 9),
        ("(10^50)^2", 10**100),
    ],
)  # fmt: skip
def test_evaluate(expr, want):
    assert evaluate(expr) == want


def test_percent_mode():
    assert evaluate("20 * 50%", percent=True) == 10
    assert evaluate("(10 + 10)%", percent=True) == F(1, 5)


@pytest.mark.parametrize(
    "expr",
    [
        "", "   ", "3 +", "x = 5", "2x", "import os", "__import__('os')", "1/0", "0^-1", "(1 + 2", "1 + 2)",
        "(1 + 2]", "2^0.5", "2^65", "2^(10^10)", "9^9^9", "1" * 101, "(10^50)^3", "1" * 1001,
        "(" * 101 + "1" + ")" * 101, "2^" * 101 + "1", "3 4", "1,2", "\\sqrt{4}", "1e5", "1.2.3", "x 3",
    ],
)  # fmt: skip
def test_evaluate_rejects(expr):
    with pytest.raises(ArithError):
        evaluate(expr)


def test_evaluate_non_string():
    with pytest.raises(ArithError):
        evaluate(12)  # type: ignore[arg-type]


def test_limits_bound_the_work():
    # The limits (length, nesting, size of numbers) cap the parser's work whatever the input: at most a fixed
    # number of steps per character of MAX_LEN, counted (tests/workcount.py), not timed.
    for expr in ["-" * 999 + "1", "(" * 100 + "1" + ")" * 100, "*".join(["99"] * 333), "2^64^1^1^1" * 10,
                 "1" * 100_000, "(" * 100_000]:  # fmt: skip
        def run(e: str = expr) -> None:
            try:
                evaluate(e)
            except ArithError:
                pass

        assert work(run, modules=(arith,)) <= 40 * MAX_LEN, expr[:20]


def _rational(n: int, half: bool) -> tuple[str, Fraction]:
    return (f"{n:,}.5" if half else f"{n:,}"), F(n) + (F(1, 2) if half else 0)


@st.composite
def expression(draw, depth=0):
    """(text, value or None when a division by zero happens)."""
    if depth >= 4 or draw(st.integers(0, 2)) == 0:
        n, half = draw(st.integers(0, 5000)), draw(st.booleans())
        text, value = _rational(n, half)
        return draw(st.sampled_from(["", "$"])) + text, value
    kind = draw(st.sampled_from(["+", "-", "*", "/", "^", "neg"]))
    sp = draw(st.sampled_from(["", " "]))
    if kind == "neg":
        text, value = draw(expression(depth + 1))
        return f"-({text})", None if value is None else -value
    if kind == "^":
        base, exp = draw(st.integers(-9, 9)), draw(st.integers(-3, 3))
        op = draw(st.sampled_from(["^", "**"]))
        value = None if base == 0 and exp < 0 else F(base) ** exp
        return f"({base}){sp}{op}{sp}({exp})", value
    lt, lv = draw(expression(depth + 1))
    rt, rv = draw(expression(depth + 1))
    spelled = {"+": ["+"], "-": ["-", "−"], "*": ["*", "×", "x", "·"], "/": ["/", "÷"]}[kind]
    op = draw(st.sampled_from(spelled))
    if op == "x":
        sp = " "
    text = f"({lt}){sp}{op}{sp}({rt})"
    if lv is None or rv is None or (kind == "/" and rv == 0):
        return text, None
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else None}[kind]
    return text, value


@FUZZ
@given(expression())
def test_evaluate_agrees_with_fractions(case):
    text, value = case
    if value is None:
        with pytest.raises(ArithError):
            evaluate(text)
    else:
        assert evaluate(text) == value


ARITH_ALPHABET = "0123456789+-*/^()., x%$×÷{}[]\\=abc"


@FUZZ
@given(st.text(max_size=200) | st.text(ARITH_ALPHABET, max_size=200))
def test_evaluate_raises_only_arith_error(text):
    try:
        v = evaluate(text)
    except ArithError:
        return
    assert isinstance(v, Fraction)


# -- equations ------------------------------------------------------------------------------------------------


def eqs(text: str) -> list[tuple[str, str, bool | None]]:
    return [(e.lhs, e.rhs, e.ok) for e in find_equations(text)]


def test_find_equations_examples():
    assert eqs("So 3 * 4 = 12 apples.") == [("3 * 4", "12", True)]
    assert eqs("12 + 5 = 17 apples") == [("12 + 5", "17", True)]
    assert eqs("$3 x 4 = $12") == [("$3 x 4", "$12", True)]
    assert eqs("3 * 4 = 13") == [("3 * 4", "13", False)]
    assert eqs("Natalia sold 48/2 = <<48/2=24>>24 clips in May.") == [("48/2", "24", True)]
    assert eqs("x = 5, and y = 2x + 3") == []
    assert eqs("50% of 20 = 10") == []
    assert eqs("20 * 50% = 10") == [("20 * 50%", "10", True)]
    assert eqs("**3 * 4 = 12**") == [("3 * 4", "12", True)]
    assert eqs("(that is 3 + 4 = 7)") == [("3 + 4", "7", True)]
    assert eqs("\\(3 \\times 4 = 12\\)") == [("3 \\times 4", "12", True)]
    assert eqs("48 + 24 = 72, then 72 - 2 = 71.") == [("48 + 24", "72", True), ("72 - 2", "71", False)]


def test_chain():
    assert eqs("2 * 3 + 1 = 6 + 1 = 7") == [("2 * 3 + 1", "6 + 1", True), ("6 + 1", "7", True)]
    assert eqs("3 * 4 = 12 + 5 = 17") == [("3 * 4", "12 + 5", False), ("12 + 5", "17", True)]


def test_rounding_allowance():
    assert eqs("10/3 = 3.33") == [("10/3", "3.33", True)]
    assert eqs("10/3 ≈ 3.3") == [("10/3", "3.3", True)]
    assert eqs("10/3 = 3.4") == [("10/3", "3.4", False)]
    assert eqs("10/3 = 3") == [("10/3", "3", False)]
    assert eqs("$12.50 / 4 = $3.13") == [("$12.50 / 4", "$3.13", True)]


def test_not_checkable_sides():
    (e,) = find_equations("3 apples - 4 * 2 = 7")
    assert e.lhs_value is None and e.ok is None
    (e,) = find_equations("3 * 4 = 12 +")
    assert e.rhs_value is None and e.ok is None


def test_offsets():
    text = "First 48 / 2 = 24, then done."
    (e,) = find_equations(text)
    assert isinstance(e, Equation)
    assert text[e.start : e.end] == "48 / 2 = 24"


ADVERSARIAL_TEXTS = {  # text of about k "units"; the old timed test used k = 100_000 characters or so
    "equations": lambda k: "1+1=2 " * (k // 5),
    "one long number": lambda k: "1" * k + "=1",
    "open parentheses": lambda k: "(" * k + "=1+1",
    "equals signs": lambda k: "=" * k,
    "times words": lambda k: "3 x " * (k // 3) + "= 9",
    "long sum": lambda k: "1+" * (k // 2) + "1=2",
    "towers": lambda k: "9^9^9^9 = 1 " * (k // 20),
    "latex times": lambda k: "\\times " * (k // 7) + "= 1+1",
    "letters": lambda k: "x" * k,
}


@pytest.mark.parametrize("name", ADVERSARIAL_TEXTS)
def test_find_equations_adversarial_is_linear(name):
    # Linear time, counted (steps inside arith.py, tests/workcount.py): 8x the text, at most 12x the work.
    # Wall-clock speed on these inputs is measured by benchmarks/parser_speed.py.
    make = ADVERSARIAL_TEXTS[name]

    def both(text: str) -> None:
        find_equations(text)
        numbers_in(text)

    assert_linear(make, both, 2000, modules=(arith,))


@FUZZ
@given(st.text(max_size=300) | st.text(ARITH_ALPHABET + "=≈<>\n", max_size=300))
def test_find_equations_never_raises(text):
    for e in find_equations(text):
        assert 0 <= e.start < e.end <= len(text)
        span = text[e.start : e.end]
        assert span.startswith(e.lhs) and span.endswith(e.rhs)
        assert e.ok in (True, False, None)
    assert all(isinstance(x, Fraction) for x in numbers_in(text))
