r"""The rule-based reference teacher: the offline default. No language model is involved.

It works only for problems whose reference solution has machine-checkable steps (`RefStep.value` set: the
synthetic problems, GSM8K's `<<expr=value>>` annotations); any other problem gets
`TeacherOutput(text=None, error="not_checkable: ...")`.

- `templates`: the hierarchical solution is rendered from the reference steps: each step's text with its
  arithmetic written as "expr = value", a <Key> for tricky steps (division, multiplication, percentages,
  several operators) explaining the expression, a <Generalized> summary of the operation sequence, and the
  reference answer.
- `corrections`: the student's steps are checked in order, each verdict with a reason code (`REASONS`) and a
  human cause. Findings are hard or soft.
  Hard, an error on its own: (a) a false equation ("48 / 2 = 25"); (b) an operand that is neither a quantity
  of the problem (digits, number words), a common constant (0, 60, 12, 100, ...), a value of the reference, a
  result the student derived earlier, nor one operation away from those ("46 / 2 = 23" with 46 nowhere).
  Soft, a route the reference does not take, which may be right: a computation with known operands whose result
  is no reference value (`$3.5 * 4000 = $14,000`), an operand one operation away from known values, a stated
  value that is not known. A soft step's result becomes usable like any other. Soft findings are blamed only
  when the final answer is wrong (then k is the first soft step), or when a later hard finding (a false equation,
  an unknown operand) shows the route went astray: then the first soft step is blamed. If nothing is found but the final answer is wrong, k is the step the wrong value comes from
  (`_origin`), else, when a reference value was never computed, the missing step at its own position
  (`missing_step="own_k"`: one past the last step if that step computed something new), else the last step (1
  with no steps). For an arithmetic error whose right value is on the reference's route, the verdict also says
  how to fix the student's own step (`Verdict.fix`, `fix_result`): the teacher's `step_fix`.
  A verification clause ("Check: 65 / 13 = 5.", the HT checkpoint's `<Key>` line; "Let's verify: ...") is
  checked for a false equation but is never the step's result: it re-derives a number the step already has.
  What is not checked: algebra (a side with a variable: "10 - 4 = 1.5x", "x^{14} = ..."), LaTeX text
  (`\text{Total} = \$12`), claims cut off by words ("9 hours * 2/3 = 6") and definitions ("48 = 120% of
  x"). The final answer is the <Answer> block, else the last \boxed{}, else the last number.
  The correction is the first reference step whose value the student has not yet produced, with "expr = value".
  Modes `single_pass` and `stepwise` give the same result: the rule-based check already goes step by step
  and stops at the first wrong one, which is exactly what the stepwise (CLAER) mode asks of an LLM teacher.

Limitations, by design: a wrong step whose result happens to equal a reference or given number is not caught
there; a wrong step on a route the reference does not take is not caught when the final answer is right anyway;
when the final answer is wrong, a correct alternative route before the real error is blamed instead (too early).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from ..arith import ArithError, Equation, evaluate, find_equations, format_number, numbers_in, parse_number
from ..grading import extract_answer, extract_boxed
from ..schema import Problem, RefStep
from ..xmlformat import parse, render_correction, render_solution, split_at_step, step_texts
from .base import CorrectionMode, CorrectionRequest, Teacher, TeacherOutput

RULE_BASED_NOTE = (
    "Rule-based reference teacher (no language model): templates are rendered from the reference solution's "
    "checkable steps; corrections locate the student's first wrong step by checking its arithmetic and comparing "
    "its results with the reference's intermediate values. Works only for problems with checkable steps "
    "(synthetic problems, GSM8K calculator annotations). single_pass and stepwise give the same result."
)
CAUSE_PREFIX = "Rule-based check: "
MissingStep = Literal["own_k", "last_step"]  # config `correct.missing_step`
TEMPLATE_SUFFIX = " (Rule-based template written from the reference steps.)"

# Constants a correct step may state without deriving them (units, "half", percentages).
_CONSTANTS = frozenset(Fraction(c) for c in (0, 1, 2, 7, 10, 12, 24, 52, 60, 100, 365, 1000))  # 0: a rest day
_WORD_NUMBERS: dict[str, set[Fraction]] = {
    **{w: {Fraction(i)} for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split())},
    **{w: {Fraction(10 * i)} for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)},
    "hundred": {Fraction(100)}, "thousand": {Fraction(1000)}, "dozen": {Fraction(12)},
    "twice": {Fraction(2)}, "double": {Fraction(2)}, "triple": {Fraction(3)}, "thrice": {Fraction(3)},
    "half": {Fraction(2), Fraction(1, 2)}, "third": {Fraction(3), Fraction(1, 3)},
    "quarter": {Fraction(4), Fraction(1, 4)}, "fourth": {Fraction(4), Fraction(1, 4)},
}  # fmt: skip
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+"
_NUMBER = re.compile(_NUM)
_PLAIN_NUMBER = re.compile(rf"\s*[-+−]?\s*\$?\s*(?:{_NUM})\s*%?\s*")
_EXPR_TOKEN = re.compile(rf"{_NUM}|\*\*|[-+*/x×÷()^%]")
_MUL = {"*", "x", "×"}
_OPERATORS = frozenset("+-*/×÷·−–^√")
_DIV = {"/", "÷"}
_TAGLIKE = re.compile(
    r"<\s{0,3}/?\s{0,3}(?:step\s{0,2}\d{0,9}|key|evaluate|cause|correction|generalized|answer)\s{0,3}>", re.I
)
_VERBS = {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "div": "divide",
    "pct": "take a percentage",
    "multi": "combine several operations",
}


# ----------------------------------------------------------------------------------------------- helpers


def _value(step: RefStep) -> Fraction | None:
    return parse_number(step.value) if step.value is not None else None


def _tokens(expr: str) -> list[str]:
    return _EXPR_TOKEN.findall(expr.replace("$", ""))


_BINARY = frozenset({"+", "-", "*", "x", "×", "/", "÷", "^", "**"})


def _is_binary(tok: str, prev: str | None) -> bool:
    """Is `tok` a binary operator (after a number, ')' or '%'), not a sign?"""
    return tok in _BINARY and prev is not None and (prev[0].isdigit() or prev[0] == "." or prev in (")", "%"))


def _norm_op(tok: str) -> str:
    return "*" if tok in _MUL else "/" if tok in _DIV else tok


def _binary_ops(tokens: list[str]) -> list[str]:
    """The binary operators of an expression, normalised to + - * / ^."""
    return [_norm_op(tok) for prev, tok in zip([None, *tokens], tokens, strict=False) if _is_binary(tok, prev)]


def show_expr(expr: str) -> str:
    """An expression with spaced binary operators: "80000*1.5" -> "80000 * 1.5"."""
    tokens = _tokens(expr)
    pairs = zip([None, *tokens], tokens, strict=False)
    out = [f" {_norm_op(tok)} " if _is_binary(tok, prev) else tok for prev, tok in pairs]
    return "".join(out).strip() or expr.strip()


def classify(step: RefStep) -> str | None:
    """The step's operation: add, sub, mul, div, pct, multi (several kinds of operators), or None."""
    if not step.expr:
        return None
    if re.search(r"/\s*100(?!\d)", step.expr) or "%" in step.text:
        return "pct"
    ops = set(_binary_ops(_tokens(step.expr)))
    if len(ops) == 1:
        return {"+": "add", "-": "sub", "*": "mul", "/": "div"}.get(ops.pop(), "multi")
    return "multi" if ops else None


def _consistent(step: RefStep) -> Fraction | None:
    """The step's value if its expression evaluates to it, else None."""
    v = _value(step)
    try:
        return v if step.expr and v is not None and evaluate(step.expr) == v else None
    except ArithError:
        return None


def step_text(step: RefStep) -> str:
    """The reference step's text with its arithmetic written as "expr = value" (appended if the text lacks it)."""
    text = step.text.strip()
    if not step.expr or step.value is None:
        return text
    v = _value(step)
    for eq in find_equations(text):
        if v is not None and v in (eq.rhs_value, eq.lhs_value):
            return text
    equation = f"{show_expr(step.expr)} = {step.value}"
    return f"{text} ({equation})" if text else equation


def key_for(step: RefStep) -> str | None:
    """A short explanation of a tricky step, generated from its expression; None for a plain + or -."""
    kind = classify(step)
    if kind in (None, "add", "sub") or step.value is None:
        return None
    shown, v = show_expr(step.expr or ""), step.value
    nums = [t for t in _tokens(step.expr or "") if t[0].isdigit() or t[0] == "."]
    exact = _consistent(step) is not None
    if kind == "div" and len(nums) == 2:
        check = f" Check by multiplying back: {v} * {nums[1]} = {nums[0]}." if exact else ""
        return f"Divide {nums[0]} into {nums[1]} equal parts: {shown} = {v}.{check}"
    if kind == "mul" and len(nums) == 2:
        check = f" Check: {v} / {nums[1]} = {nums[0]}." if exact and parse_number(nums[1]) else ""
        return f"Multiply the two quantities {nums[0]} and {nums[1]}: {shown} = {v}.{check}"
    if kind == "pct":
        m = re.fullmatch(rf"\s*({_NUM})\s*\*\s*({_NUM})\s*/\s*100\s*", step.expr or "")
        if m:
            return (
                f"{m.group(2)}% means {m.group(2)} out of every 100, so multiply {m.group(1)} by {m.group(2)} "
                f"and divide by 100: {shown} = {v}."
            )
        return f"A percentage is a part out of 100; write it as a fraction of 100 before computing: {shown} = {v}."
    if kind in ("mul", "div"):
        return f"Multiply and divide from left to right: {shown} = {v}."
    return (
        f"This step combines several operations: do multiplication and division before addition and "
        f"subtraction, from left to right: {shown} = {v}."
    )


def generalized_for(steps: list[RefStep]) -> str:
    """A strategy summary from the operation sequence of the reference steps."""
    verbs: list[str] = []
    for step in steps:
        kind = classify(step)
        if kind is not None and (not verbs or verbs[-1] != _VERBS[kind]):
            verbs.append(_VERBS[kind])
    plan = (verbs[0] + "".join(f", then {v}" for v in verbs[1:])) if verbs else "compute step by step"
    return (
        f"Identify the given quantities; {plan}, each step using the result of the one before; "
        f"check each intermediate result before using it, and the last result answers the question."
    )


def _partials(expr: str) -> set[Fraction]:
    """Partial results of an expression a correct solution may write on the way: left-to-right prefixes (not of a
    plain sum) and each run of * and / ("16-3-4" gives 13; "4+3*12" gives 36)."""
    toks = _tokens(expr)
    out: set[Fraction] = set()
    # at least "a op b"; not a prefix of a plain sum ("3+1.5" of "3+1.5+1.5"): that is a forgotten term
    pieces = ["".join(toks[:i]) for i in range(3, len(toks) + 1) if i == len(toks) or set(toks[:i]) & set("-*/x×÷")]
    runs, cur = [], []
    for tok in toks:
        if tok in ("+", "-", "(", ")"):
            if len(cur) > 1:
                runs.append("".join(cur))
            cur = []
        else:
            cur.append(tok)
    if len(cur) > 1:
        runs.append("".join(cur))
    for piece in pieces + runs + _regrouped(toks):
        try:
            out.add(evaluate(piece))
        except ArithError:
            continue
    return out


def _regrouped(toks: list[str]) -> list[str]:
    """Partial results of a flat expression taken in another order, which correct solutions often write:
    two subtracted terms added ("16-3-4" gives 3+4 = 7: eggs used, then 16 - 7) and two factors of a
    product multiplied ("3*3*60" gives 3*60 = 180: meters per session). Bounded: at most 12 terms or factors."""
    if "(" in toks or ")" in toks or len(toks) > 25:
        return []
    terms: list[tuple[str, list[str]]] = []  # (sign, tokens of the term)
    sign, cur = "+", []
    for prev, tok in zip([None, *toks], toks, strict=False):
        if tok in ("+", "-") and _is_binary(tok, prev):
            terms.append((sign, cur))
            sign, cur = tok, []
        else:
            cur.append(tok)
    terms.append((sign, cur))
    out = []
    for i, (si, ti) in enumerate(terms):
        for sj, tj in terms[i + 1 :]:
            if si == sj == "-" and ti and tj:  # not two added terms: forgetting one of a sum is a common error
                out.append("".join(ti) + "+" + "".join(tj))
        factors = [t for t in ti if t not in ("*", "x", "×")]
        if len(factors) > 2 and len(factors) * 2 - 1 == len(ti) and all(t in _MUL for t in ti[1::2]):
            out += [f"{a}*{b}" for n, a in enumerate(factors) for b in factors[n + 1 :]]
    return out


def _cut(body: str, eq: Equation) -> bool:
    """Is this claim not a whole computation? Its left side is a plain number ("48 = 120% of x"), or a side
    was cut off by words ("9 hours * 2/3 = 6" gives "2/3 = 6"; "27 - 9 = (6 * x)" gives "27 - 9 = 6")."""
    if _PLAIN_NUMBER.fullmatch(eq.lhs):
        return True
    j = eq.start - 1
    while j >= 0 and body[j] in " \t":
        j -= 1
    if j >= 0:
        before = body[j]
        if before in _OPERATORS or (before in "xX" and (j == 0 or not body[j - 1].isalpha())):
            return True
        lhs = eq.lhs.lstrip()
        if lhs and lhs[0] in _OPERATORS and (before.isalnum() or before in ")%"):
            return True
    k = eq.end
    while k < len(body) and body[k] in " \t":
        k += 1
    return k < len(body) and body[k] in _OPERATORS


def _checked(body: str) -> list[Equation]:
    """The step's equations whose left side is complete."""
    return [e for e in find_equations(body) if not _cut(body, e)]


def _decimals(written: str) -> int:
    m = re.search(r"\.(\d+)", written)
    return len(m.group(1)) if m else 0


def _matches(x: Fraction, written: str, targets: set[Fraction]) -> bool:
    """x equals a target, or rounds to one at the decimal places it was written with; a value written with
    '%' may also match as x*100 or x/100."""
    xs = [x, x * 100, x / 100] if "%" in written else [x]
    if any(v in targets for v in xs):
        return True
    d = _decimals(written)
    return d > 0 and any(abs(v - t) <= Fraction(1, 2 * 10**d) for v in xs for t in targets)


def _result(body: str, eqs: list[Equation]) -> tuple[Fraction, str] | None:
    """A step's result: the right side of its last equation, else its last number; None without numbers."""
    for eq in reversed(eqs):
        if eq.rhs_value is not None:
            return eq.rhs_value, eq.rhs
        first = _NUMBER.search(eq.rhs)  # "12 (15 minutes)": the number right after '='
        if first is not None and (value := parse_number(first.group(0))) is not None:
            return value, first.group(0)
    last = None
    for m in _NUMBER.finditer(body):
        last = m
    if last is None:
        return None
    value = parse_number(last.group(0))
    return (value, last.group(0)) if value is not None else None


_TEXT_WORDS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s{0,3}\{[^{}]{0,300}\}")


def _answer_value(text: str | None) -> Fraction | None:
    """The number an answer states: "18", "$18.00", "\\frac{1}{2}", "18 \\text{ dollars}", "\\boxed{18}", else
    its last number."""
    if not text:
        return None
    boxed = extract_boxed(text)
    text = _TEXT_WORDS.sub(" ", boxed if boxed else text).replace("\\$", "$").strip().rstrip(".")
    v = parse_number(text)
    if v is not None:
        return v
    try:
        return evaluate(text)
    except ArithError:
        pass
    nums = numbers_in(text)
    return nums[-1] if nums else None


_HEADER = re.compile(r"^[ \t]{0,8}(?:#{1,6}[ \t]{0,3})?(?:\*\*)?[ \t]{0,3}(?:step[ \t]{0,3}\d{1,3}|\d{1,2}(?=[.)][ \t]))"
                     r"[ \t]{0,3}[:.)]?[ \t]{0,3}(?:\*\*)?", re.I | re.M)
# A verification clause ("Check: 65 / 13 = 5.", "Let's verify: 5 * 13 = 65", "(check: 40 / 8 = 5)"): it re-derives
# a number the step already has, so it is checked for a false equation but is never the step's result. It starts
# at a line or sentence start (or after '(' / ';') and runs to the end of its line. "check" needs its colon: "To
# check how many are left, 10 - 3 = 7" computes, it does not verify.
_CHECK = re.compile(
    r"(?:^|(?<=[.!;:(\n]))[ \t]{0,3}(?:\*\*)?[ \t]{0,3}(?:let'?s[ \t]{1,3}|let[ \t]us[ \t]{1,3}|to[ \t]{1,3})?"
    r"(?:check(?:ing)?[ \t]{0,3}:|(?:double|sanity)[- \t]?check(?:ing)?\b|verif(?:y|ying|ication)\b)[^\n]{0,2000}",
    re.I | re.M,
)


def _split_checks(body: str) -> tuple[str, str]:
    """The step without its verification clauses, and the clauses (joined by newlines). Linear: one regex pass."""
    checks = [m.group(0) for m in _CHECK.finditer(body)]
    if not checks:
        return body, ""
    return _CHECK.sub(" ", body), "\n".join(checks)


_ANSWER_IS = re.compile(rf"(?:answer\s{{0,3}}(?:is|:|=)|####)\s{{0,3}}:?[\s*]{{0,5}}[$\\]{{0,2}}\s{{0,3}}(-?(?:{_NUM}))", re.I)
_SIGNED = re.compile(rf"(?<![\w)\]}}])-?(?:{_NUM})|(?:{_NUM})")
_PARENS = re.compile(r"\([^()]{0,300}\)")
_INLINE_MATH = re.compile(r"\\[()]")


def student_answer(raw: str, steps: list[str]) -> str | None:
    """The student's final answer: its <Answer> block, else the last \\boxed{} (of the raw text, else of the
    steps), else the number after the last "answer is" / "####", else the last number outside parentheses
    ("$18 every day (9 eggs x $2)" gives 18; LaTeX inline math `\\( ... \\)` is no parenthesis). A boxed answer wins over numbers written after it."""
    text = raw if raw.strip() else "\n".join(steps)
    found = extract_answer(text)
    if found.source != "last_number":
        return found.answer
    said = None
    for m in _ANSWER_IS.finditer(text[-100_000:]):
        said = m.group(1)
    if said is not None:
        return said
    tail = _INLINE_MATH.sub("  ", text[-2000:])  # "\\(4 \\times 4 = 16\\)" is inline math, not an aside
    nums = _SIGNED.findall(_PARENS.sub(" ", tail))
    return nums[-1] if nums else found.answer


def _norm(text: str) -> str:
    return re.sub(r"[\s$]", "", text).lower()


def _answer_ok(student: str | None, reference: str) -> bool:
    ref = _answer_value(reference)
    if ref is None:  # a non-numeric reference answer: compare the text
        return student is not None and _norm(student) == _norm(reference)
    got = _answer_value(student)
    return got is not None and _matches(got, student or "", {ref})


def checkable(problem: Problem) -> bool:
    """Whether the reference teacher can work on this problem: reference steps, at least one with a value."""
    return bool(problem.steps) and any(_value(s) is not None for s in problem.steps)


def _not_checkable(problem: Problem) -> TeacherOutput:
    return TeacherOutput(
        text=None,
        error=(
            f"not_checkable: problem {problem.id} ({problem.source}) has no reference steps with values; "
            "the rule-based reference teacher needs checkable steps (synthetic or GSM8K annotations)"
        ),
    )


# ----------------------------------------------------------------------------------------------- checking


@dataclass
class _Known:
    """What a correct step may use and produce. `derived`: values on the reference's route (reference
    intermediate values, partial results of reference expressions, numbers the reference writes in unannotated
    steps, percentages of given numbers as fractions). `usable`: numbers a step may use or restate: `derived`
    plus the problem's numbers (digits and number words) and common unit constants (0 included: "0 km on a rest
    day"). The locator adds the student's own results to `usable` as it goes."""

    ref: list[tuple[RefStep, Fraction]]
    derived: set[Fraction]
    usable: set[Fraction]
    given: set[Fraction]  # the problem's own numbers


def _known(problem: Problem) -> _Known:
    ref = [(s, v) for s in problem.steps if (v := _value(s)) is not None]
    given = {abs(q) for q in numbers_in(problem.question)}
    for word in re.findall(r"[a-z]+", problem.question.lower()):
        given |= _WORD_NUMBERS.get(word, set())
    rates = {g / 100 for g in given if g}
    derived = {v for _, v in ref} | rates | {1 + r for r in rates} | {1 - r for r in rates if r < 1}  # 30%: 0.7
    usable = set(given) | _CONSTANTS
    for s in problem.steps:
        numbers = {abs(n) for n in numbers_in(s.text)}
        usable |= numbers
        if s.value is None:  # an unannotated step may compute values the reference never annotates
            derived |= numbers
        for e in find_equations(s.text):  # "1/2 * 1/2 = 1/4" written without an annotation
            derived |= {abs(v) for v in (e.lhs_value, e.rhs_value) if v is not None}
        if s.expr:
            usable |= {abs(n) for n in numbers_in(s.expr)}
            derived |= _partials(s.expr)
    return _Known(ref, derived, usable | derived, given)


# Facts a correct solution may bring in (days in a month, ounces in a pound, feet in a mile, cents): not given,
# so a step using one is soft (blamed only with a wrong final answer), not an unknown operand.
_UNITS = frozenset(Fraction(c) for c in (3, 4, 5, 6, 8, 16, 20, 25, 30, 31, 36, 48, 50, 360, 1760, 2000, 3600, 5280))
MAX_KNOWN = 400  # values searched for one-operation derivations (bounds the work per step)


_SCALES = frozenset(Fraction(c) for c in (2, 7, 12, 24, 60, 100, 1000))  # unit conversions, halves, percents


def _one_op(x: Fraction, known: set[Fraction]) -> bool:
    """Is x = a op b for known a, b and op one of + - * /, or a known value scaled by a unit constant
    (90 / 60 = 1.5 hours)? O(len(known)) set lookups, at most MAX_KNOWN."""
    if any(x * c in known or x / c in known for c in _SCALES):
        return True
    for i, a in enumerate(known):
        if i >= MAX_KNOWN:
            return False
        if x - a in known or a - x in known or x + a in known:
            return True
        if a != 0 and (x / a in known or x * a in known):
            return True
        if x != 0 and a / x in known:
            return True
    return False


# Why a verdict was given: a machine-readable code per outcome (Verdict.reason), with the human text in
# Verdict.cause. "Hard" findings are errors on their own; "soft" ones (a route the reference does not take) are
# blamed only when the final answer is wrong and no hard finding came earlier.
REASONS: dict[str, str] = {
    "arithmetic_error": "a step states a false equation (its left side evaluates to another value)",
    "unknown_operand": "a step computes with a number that is neither given, a reference value, an earlier "
    "result of the student, nor one operation away from those",
    "off_reference_result": "the final answer is wrong and this is the first step whose result is not on the "
    "reference's route (correct arithmetic on known numbers, but a value the reference never reaches)",
    "derived_operand": "the final answer is wrong and this is the first step that uses a number the student never "
    "wrote, one operation away from known values",
    "unsupported_value": "the final answer is wrong and this is the first step stating a value that is neither "
    "known nor computed",
    "final_answer_only": "every step checks out, but the final answer is wrong: the step where the wrong final value "
    "comes from is blamed (see _origin), else the last step",
    "missing_step": "every step checks out, the final answer is wrong and a reference value was never computed "
    "(`missing_step='own_k'`): the missing step is blamed at its own position: one past the last step when that "
    "step computed something new (the student stopped early), else the last step (it jumped to the answer there)",
    "no_error": "every checkable step is consistent and the final answer is right",
}
_KIND = {"arithmetic_error": "arithmetic", "final_answer_only": "final_answer", "missing_step": "final_answer",
         "no_error": None}


@dataclass
class Verdict:
    """Where the student's first error is (1-based; None: no error found) and why: `reason` is a code of
    REASONS, `cause` the human text."""

    index: int | None  # len(steps) + 1 for a missing step after the student's last one
    kind: str | None  # "arithmetic" | "value" | "final_answer" | None
    cause: str | None = None
    correction: str | None = None
    reason: str = "no_error"
    # arithmetic_error only, when the right value is on the reference's route: the false equation's left side and
    # its result as written, and the right result written the same way (see `fix_result`)
    fix: tuple[str, str, str] | None = None


@dataclass
class _Soft:
    """A step accepted for now although it leaves the reference's route; blamed if the answer turns out wrong."""

    index: int
    reason: str
    cause: str
    value: Fraction | None
    correction: str


def locate_first_error(
    problem: Problem, steps: list[str], answer: str | None, missing_step: MissingStep = "own_k"
) -> Verdict:
    """Check the student's steps in order against the reference; see the module docstring for the rules.

    `missing_step` (config `correct.missing_step`): when every step checks out but the final answer is wrong and
    a reference value was never computed, `own_k` blames the missing step at its own position (reason
    `missing_step`): len(steps) + 1 when the last step computed a new value (the student stopped early: blaming
    that right step, a pair would replace it by the next one and teach skipping a step); else the last step,
    which only restates a value, states the answer or talks ("So the answer is 37."): there the student jumped
    to its answer. `last_step` blames the last written step in both cases, as before the knob existed. The
    correction is the first reference step not produced, as before."""
    known = _known(problem)
    ref_values = {v for _, v in known.ref}
    produced: set[Fraction] = set()
    usable = set(known.usable)  # grows with the student's own results
    # One-operation derivations of an operand start from what the student can know at that point: the given
    # numbers and its own results (not later reference values, not the unit constants: "n + 1" allows anything).
    pool = known.given - _CONSTANTS
    soft: list[_Soft] = []
    results: list[tuple[int, Fraction, bool]] = []  # (step, result, computed) in order
    seen: set[Fraction] = set()  # the results so far
    progress = 0  # the last step that computed a new value, or stated a new reference value

    def correction() -> tuple[str, str]:
        """The first reference step not yet produced, as text, and its equation."""
        pending = [s for s, v in known.ref if v not in produced]
        target = pending[0] if pending else known.ref[-1][0]
        text = step_text(target)
        if target is known.ref[-1][0]:
            text += f" The answer is {problem.answer}."
        equation = f"{show_expr(target.expr)} = {target.value}" if target.expr else f"{target.value}"
        return text, equation

    def verdict(i: int, reason: str, cause: str, fix: str | None = None) -> Verdict:
        return Verdict(i, _KIND.get(reason, "value"), cause, fix or correction()[0], reason)

    for i, body in enumerate(steps, 1):
        body = _HEADER.sub(" ", body)  # "## Step 3:" and "2." are labels, not quantities
        body, checks = _split_checks(body)  # "Check: 65 / 13 = 5" verifies, it is not the step's result
        eqs = [e for e in _checked(body) if not e.algebra]
        algebra = any(e.algebra for e in find_equations(body))
        bad = next((e for e in eqs if e.ok is False), None)
        if bad is None and checks:
            bad = next((e for e in _checked(checks) if not e.algebra and e.ok is False), None)
        if bad is not None and bad.lhs_value is not None:
            lhs = bad.lhs.strip()
            cause = f"Step {i} computes {lhs} as {bad.rhs.strip()}, but {lhs} = {format_number(bad.lhs_value)}."
            if soft:  # real solutions (the embedded student's dev set): the off-route step before is the error
                return verdict(soft[0].index, soft[0].reason, soft[0].cause, soft[0].correction)
            found = verdict(i, "arithmetic_error", cause)
            right = abs(bad.lhs_value)
            first = _NUMBER.search(bad.rhs)
            if first is not None and _matches(right, format_number(right), known.derived):
                found.fix = (lhs, first.group(0), _written_like(bad.lhs_value, first.group(0)))
            return found
        computed = [e for e in eqs if e.lhs_value is not None and e.rhs_value is not None]
        result = _result(body, eqs) if eqs or not algebra else None
        if result is None:
            continue
        x, written = result
        operands = [abs(n) for e in computed for n in numbers_in(e.lhs)]
        new_value = abs(x) not in known.given and abs(x) not in seen
        seen.add(abs(x))
        n_produced = len(produced)
        results.append((i, abs(x), bool(computed)))
        unknown = [n for n in operands if n not in usable]
        fix, equation = correction()
        far = next((n for n in unknown if not _one_op(n, pool) and n not in _UNITS), None)
        if far is not None:
            if soft:  # an earlier step already left the reference's route: the odd number likely comes from it
                return verdict(soft[0].index, soft[0].reason, soft[0].cause, soft[0].correction)
            cause = (
                f"Step {i} uses {format_number(far)}, which is neither a quantity from the problem nor a "
                f"correct earlier result, so its result {written.strip()} is wrong; the step should find {equation}."
            )
            return verdict(i, "unknown_operand", cause)
        on_route = _matches(abs(x), written, known.derived if computed else usable)
        if not unknown and on_route:
            produced |= {v for v in ref_values if _matches(abs(x), written, {v})}
            produced |= {e.rhs_value for e in eqs if e.rhs_value in ref_values}
        elif unknown:
            cause = (
                f"Step {i} uses {format_number(unknown[0])}, which is neither a quantity from the problem nor a "
                f"correct earlier result, so its result {written.strip()} is wrong; the step should find {equation}."
            )
            soft.append(_Soft(i, "derived_operand", cause, abs(x), fix))
        elif computed:
            cause = (
                f"The result {written.strip()} in step {i} is not a correct intermediate quantity; "
                f"the step should find {equation}."
            )
            soft.append(_Soft(i, "off_reference_result", cause, abs(x), fix))
        else:
            cause = (
                f"The value {written.strip()} in step {i} is neither given nor computed; "
                f"the step should find {equation}."
            )
            soft.append(_Soft(i, "unsupported_value", cause, abs(x), fix))
        if new_value and (computed or len(produced) > n_produced):  # "So the answer is 24." is no progress
            progress = i
        new = {abs(x)} | {abs(e.rhs_value) for e in computed if e.rhs_value is not None}
        usable |= new
        pool |= new
    if _answer_ok(answer, problem.answer):
        return Verdict(None, None)
    if soft:
        first = soft[0]
        return verdict(first.index, first.reason, first.cause, first.correction)
    shown = answer.strip() if answer and answer.strip() else "missing"
    cause = f"The steps do not reach the correct final answer: the answer {shown} should be {problem.answer}."
    origin = _origin(results, _answer_value(answer))
    if origin is not None and origin < len(steps):
        return verdict(origin, "final_answer_only", cause + f" The wrong value first appears in step {origin}.")
    if missing_step == "own_k" and steps and any(v not in produced for _, v in known.ref):
        # The student stopped right after a step that computed something new: the gap is after its last step.
        # Otherwise its last step only restates, states the answer or talks: that is where it jumped to the answer.
        k = len(steps) + 1 if progress == len(steps) else len(steps)
        _, equation = correction()
        where = "after the last step" if k > len(steps) else f"in place of step {k}, which computes nothing new"
        return verdict(k, "missing_step", cause + f" A step is missing {where}: it should find {equation}.")
    return verdict(max(len(steps), 1), "final_answer_only", cause)


def _origin(results: list[tuple[int, Fraction, bool]], got: Fraction | None) -> int | None:
    """Where a wrong final value comes from: the first step that states it without computing it ("Then he rode
    15 miles"); or, when the last step computes it, the first step that produced it (a wrong value that happens to
    be a reference value and comes back). None when the last step merely states an earlier correct result as the
    answer ("Silver = 40 ... Gretchen has 40 gold coins"): that answer step is the error."""
    if got is None or not results:
        return None
    got = abs(got)
    plain = next((i for i, v, computed in results if v == got and not computed), None)
    if plain is not None and plain < results[-1][0]:
        return plain
    if results[-1][2]:
        return next((i for i, v, _ in results if v == got), None)
    return None


def _written_like(value: Fraction, written: str) -> str:
    """`value` written like the number `written`: as many decimals ("25.00" -> "24.00") and thousands commas
    ("1,250" -> "1,240") where the value allows, else `format_number`."""
    places = _decimals(written)
    if (value * 10**places).denominator != 1:
        return format_number(value)
    scaled = abs(value * 10**places).numerator
    whole, frac = divmod(scaled, 10**places)
    text = (f"{whole:,}" if "," in written else str(whole)) + (f".{frac:0{places}d}" if places else "")
    return ("-" if value < 0 else "") + text


def fix_result(text: str, fix: tuple[str, str, str]) -> str | None:
    """`text` (a step as the student wrote it) with the result of its false equation replaced by the right one,
    and the same number written later in the step (the wrong result carried on) too; None when the equation is
    not found or the step still states a false equation afterwards (the error is not just that number).

    fix = (left side, wrong result, right result) from `Verdict.fix`. Linear in the text: one search for the
    left side, one for the result after it, one pass over later numbers, one `find_equations` check."""
    lhs, wrong, right = fix
    at = text.find(lhs)
    if at < 0 or not wrong:
        return None
    m = re.compile(r"[ \t]{0,3}(?:=|≈)[ \t]{0,3}[$\\]{0,2}[ \t]{0,3}").match(text, at + len(lhs))
    if m is None or not text.startswith(wrong, m.end()):
        return None
    start = m.end()
    tail = re.sub(rf"(?<![\d.,]){re.escape(wrong)}(?![\d]|[.,]\d)", right, text[start + len(wrong) :])
    fixed = text[:start] + right + tail
    if any(e.ok is False for e in find_equations(_TAGLIKE.sub(" ", fixed)) if not e.algebra):
        return None
    return fixed


# ----------------------------------------------------------------------------------------------- teacher


@dataclass
class ReferenceOutput(TeacherOutput):
    """A rule-based correction: also the student's step k in its own words, fixed (`step_fix`, arithmetic errors
    only): what pairs with `chosen: student_form` prefer, so that chosen and rejected differ only at the error."""

    step_fix: str | None = None


class ReferenceTeacher(Teacher):
    """Rule-based teacher for problems with checkable reference steps (see the module docstring).

    `mark_text=True` (default) makes the text it writes say that it is rule-based: every <Cause> starts with
    "Rule-based check: " and every <Generalized> ends with a note. Set it False to keep training text free of
    the label (describe() and usage() always say so). `missing_step`: see `locate_first_error`."""

    name = "reference (rule-based)"
    rule_based = True

    def __init__(self, mark_text: bool = True, missing_step: MissingStep = "own_k") -> None:
        self.mark_text = mark_text
        self.missing_step = missing_step
        self._templates = 0
        self._corrections = 0
        self._not_checkable = 0

    def describe(self) -> dict:
        return {**super().describe(), "note": RULE_BASED_NOTE, "mark_text": self.mark_text,
                "missing_step": self.missing_step}  # fmt: skip

    def usage(self) -> dict:
        return {
            "requests_sent": 0,
            "cache_hits": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "rule_based": True,
            "templates": self._templates,
            "corrections": self._corrections,
            "not_checkable": self._not_checkable,
        }

    def template(self, problem: Problem) -> TeacherOutput:
        """One hierarchical solution rendered from the reference steps."""
        if not checkable(problem):
            self._not_checkable += 1
            return _not_checkable(problem)
        texts = [step_text(s) for s in problem.steps]
        keys = {i: k for i, s in enumerate(problem.steps, 1) if (k := key_for(s)) is not None}
        generalized = generalized_for(problem.steps) + (TEMPLATE_SUFFIX if self.mark_text else "")
        self._templates += 1
        return TeacherOutput(text=render_solution(texts, problem.answer, generalized, keys))

    def templates(self, problems: list[Problem]) -> list[TeacherOutput]:
        return [self.template(p) for p in problems]

    def locate(self, request: CorrectionRequest) -> tuple[Verdict, list[str]]:
        """The verdict on a request's solution (its first wrong step and why) and the steps it checked."""
        raw = request.student_solution if isinstance(request.student_solution, str) else ""
        steps = list(request.steps) or step_texts(parse(raw))
        if not steps:  # tag-less output: one step per non-empty line
            steps = [line.strip() for line in raw.splitlines() if line.strip()]
        steps = [_TAGLIKE.sub(" ", s).strip() for s in steps]
        return locate_first_error(request.problem, steps, student_answer(raw, steps), self.missing_step), steps

    def correction(self, request: CorrectionRequest) -> ReferenceOutput:
        """One correction trace: the student's first wrong step with a cause and the reference correction;
        `reason` is the verdict's code (see REASONS). A missing step after the last one is the trace's step
        len(steps) + 1, every written step evaluated correct before it. For an arithmetic error, `step_fix` is
        the student's step k as it wrote it (tags and all) with the wrong result replaced by the right one."""
        problem = request.problem
        if not checkable(problem):
            self._not_checkable += 1
            return ReferenceOutput(**vars(_not_checkable(problem)))
        verdict, steps = self.locate(request)
        shown = steps or ["(no steps)"]
        fix = None
        if verdict.index is None:
            text = render_correction(shown, None, None, None, problem.answer)
        else:
            cause = (CAUSE_PREFIX if self.mark_text else "") + (verdict.cause or "")
            # a missing step after the last one: the placeholder makes it a step of the trace (never rendered)
            padded = shown + [""] if verdict.index == len(shown) + 1 else shown
            text = render_correction(padded, verdict.index, cause, verdict.correction or "", problem.answer)
            raw = request.student_solution if isinstance(request.student_solution, str) else ""
            if verdict.fix is not None and len(parse(raw).steps) == len(steps):
                split = split_at_step(raw, verdict.index)
                fix = fix_result(split[1], verdict.fix) if split else None
        self._corrections += 1
        return ReferenceOutput(text=text, reason=verdict.reason, step_fix=fix)

    def corrections(
        self, requests: list[CorrectionRequest], *, mode: CorrectionMode = "single_pass"
    ) -> list[ReferenceOutput]:
        """Same result for both modes (the rule-based check is already step by step)."""
        if mode not in ("single_pass", "stepwise"):
            raise ValueError(f"unknown correction mode {mode!r}; use 'single_pass' or 'stepwise'")
        return [self.correction(r) for r in requests]
