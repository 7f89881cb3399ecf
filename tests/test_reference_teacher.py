"""The rule-based reference teacher: templates from reference steps, and first-error location on planted errors."""

from __future__ import annotations

import random
import re
from fractions import Fraction

import pytest

from supercorrect.arith import ArithError, evaluate, find_equations, format_number, parse_number
from supercorrect.data import DataSpec, generate_synthetic, load_problems
from supercorrect.schema import Problem, RefStep
from supercorrect.teachers.base import CorrectionRequest
from supercorrect.teachers.reference import ReferenceTeacher, locate_first_error, show_expr, step_text
from supercorrect.xmlformat import parse, render_solution, step_texts

NUM = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+")
MIN_RATE = 0.95


def _problem(steps: list[tuple[str, str, str]], question: str, answer: str) -> Problem:
    return Problem(
        id="t",
        question=question,
        solution="\n".join(t for t, _, _ in steps),
        answer=answer,
        steps=[RefStep(text=t, expr=e, value=v) for t, e, v in steps],
        source="synthetic",
    )


PENCILS = _problem(
    [
        ("Mia buys 4 packs of 12 pencils, so she has 4 * 12 = 48 pencils.", "4 * 12", "48"),
        ("She splits them into 2 bags: 48 / 2 = 24 pencils.", "48 / 2", "24"),
        ("After giving 5 away she has 24 - 5 = 19 pencils.", "24 - 5", "19"),
    ],
    "Mia buys 4 packs of 12 pencils. She splits them equally into 2 bags and keeps one. She gives 5 away. "
    "How many pencils does she have?",
    "19",
)


def _first_error(text: str | None) -> int | None:
    assert text is not None
    parsed = parse(text)
    assert not parsed.issues, parsed.issues
    return parsed.first_error


def _gsm8k_rows(data_dir, n: int) -> list[Problem]:
    """GSM8K test rows whose every step is annotated and whose annotations are right (evaluate(expr) == value)."""
    out = []
    for p in load_problems(DataSpec(kind="gsm8k", path="gsm8k/test.jsonl"), data_dir):
        try:
            if p.checkable and all(evaluate(s.expr) == parse_number(s.value) for s in p.steps):
                out.append(p)
        except ArithError:
            continue
        if len(out) == n:
            break
    return out


# ----------------------------------------------------------------------------------------------- templates


def test_describe_and_usage_say_rule_based():
    t = ReferenceTeacher()
    d = t.describe()
    assert d["rule_based"] is True and t.rule_based and "rule-based" in d["note"].lower()
    assert "rule-based" in t.name
    assert t.usage()["requests_sent"] == 0


def test_templates_synthetic_parse_with_answer():
    problems = generate_synthetic(300, seed=5, split="train")
    outs = ReferenceTeacher().templates(problems)
    for p, out in zip(problems, outs, strict=True):
        parsed = parse(out.text)
        assert parsed.ok, parsed.issues
        assert parsed.answer == p.answer and len(parsed.steps) == len(p.steps)
        assert "Rule-based" in parsed.generalized
        for step, ref in zip(parsed.steps, p.steps, strict=True):
            assert f"{ref.expr} = {ref.value}" in step.body
            if any(op in ref.expr for op in "*/"):
                assert step.key and ref.value in step.key
            else:
                assert step.key is None


def test_template_keys_and_generalized():
    out = ReferenceTeacher(mark_text=False).templates([PENCILS])[0].text
    parsed = parse(out)
    assert parsed.steps[1].key == "Divide 48 into 2 equal parts: 48 / 2 = 24. Check by multiplying back: 24 * 2 = 48."
    assert parsed.generalized.startswith("Identify the given quantities; multiply, then divide, then subtract")
    assert "Rule-based" not in out
    pct = RefStep(text="25% of 72 is 72 * 25 / 100 = 18.", expr="72 * 25 / 100", value="18")
    assert step_text(pct) == pct.text
    # GSM8K-style: the arithmetic is appended when the text does not show it
    bare = RefStep(text="So he has 18 left", expr="9*2", value="18")
    assert step_text(bare) == "So he has 18 left (9 * 2 = 18)"
    assert show_expr("80000*1.5") == "80000 * 1.5"


def test_templates_gsm8k_parse_with_answer(data_dir):
    problems = load_problems(DataSpec(kind="gsm8k", path="gsm8k/test.jsonl"), data_dir)
    outs = ReferenceTeacher().templates(problems)
    done = 0
    for p, out in zip(problems, outs, strict=True):
        if out.text is None:
            assert out.error.startswith("not_checkable:") and not any(s.value for s in p.steps)
            continue
        parsed = parse(out.text)
        assert parsed.ok and parsed.answer == p.answer, (p.id, parsed.issues)
        done += 1
    assert done == 1301  # every row with an annotation


def test_not_checkable_problem():
    math = Problem(id="m", question="x?", solution="$\\boxed{2}$", answer="2", source="math")
    t = ReferenceTeacher()
    out = t.templates([math])[0]
    assert out.text is None and out.error.startswith("not_checkable:")
    corr = t.corrections([CorrectionRequest(math, "<Step1>2</Step1><Answer>2</Answer>")])[0]
    assert corr.text is None and corr.error.startswith("not_checkable:")
    assert t.usage()["not_checkable"] == 2


# ----------------------------------------------------------------------------------------------- corrections


def _student(bodies: list[str], answer: str) -> CorrectionRequest:
    return CorrectionRequest(PENCILS, render_solution(bodies, answer))


def test_arithmetic_error_cause_and_correction():
    req = _student(["4 * 12 = 48 pencils.", "48 / 2 = 25 pencils.", "25 - 5 = 20."], "20")
    out = ReferenceTeacher().corrections([req])[0]
    parsed = parse(out.text)
    assert parsed.first_error == 2 and parsed.answer == "19"
    step = parsed.steps[1]
    assert step.cause == "Rule-based check: Step 2 computes 48 / 2 as 25, but 48 / 2 = 24."
    assert step.correction == "She splits them into 2 bags: 48 / 2 = 24 pencils."
    assert parsed.steps[0].evaluate == "This step is correct."
    assert len(parsed.steps) == 2  # later steps omitted


def test_wrong_intermediate_value():
    verdict = locate_first_error(PENCILS, ["4 * 12 = 48", "48 / 3 = 16", "16 - 5 = 11"], "11")
    assert (verdict.index, verdict.kind) == (2, "value")
    assert "16" in verdict.cause and "48 / 2 = 24" in verdict.cause
    wrong_operand = locate_first_error(PENCILS, ["4 * 12 = 48", "46 / 2 = 23", "23 - 5 = 18"], "18")
    assert wrong_operand.index == 2 and "uses 46" in wrong_operand.cause


def test_correct_solution_and_final_answer_only():
    good = ["She has 4 * 12 = 48.", "Half is 48 / 2 = 24.", "Then 24 - 5 = 19."]
    assert locate_first_error(PENCILS, good, "19").index is None
    assert locate_first_error(PENCILS, ["Half of 48 is 24 (48 / 2 = 24)."] + good[2:], "19").index is None
    # steps right, answer wrong -> the last step; text steps without numbers are fine
    verdict = locate_first_error(PENCILS, ["Think about it."] + good, "20")
    assert (verdict.index, verdict.kind) == (4, "final_answer")
    assert "The answer is 19." in verdict.correction
    # a correct partial result of a reference expression is accepted
    partial = _problem([("16 - 3 - 4 = 9 eggs.", "16-3-4", "9")], "16 eggs, eats 3, bakes 4.", "9")
    assert locate_first_error(partial, ["16 - 3 = 13", "13 - 4 = 9"], "9").index is None
    # a claim cut by words is not checked ("9 hours * 2/3 = 6")
    cut = _problem([("9 * 2/3 = 6 hours.", "9*2/3", "6")], "He slept 9 hours, she 2/3 of that.", "6")
    assert locate_first_error(cut, ["She slept 9 hours * 2/3 = 6 hours."], "6").index is None


def test_untrusted_inputs_never_crash():
    t = ReferenceTeacher()
    cases = ["", "no tags at all, 48 / 2 = 25", "<Step1>4 * 12 = 48", "<Answer>19</Answer>", "<<<>>> <Step9>",
             "Step 1: 4 * 12 = 48\nStep 2: 48 / 2 = 24\nStep 3: 24 - 5 = 19\nThe answer is 19"]  # fmt: skip
    outs = t.corrections([CorrectionRequest(PENCILS, c) for c in cases], mode="stepwise")
    got = [_first_error(o.text) for o in outs]
    # empty, wrong tag-less, truncated, junk; the truncated "4 * 12 = 48" is right but stops: its missing step is 2
    # (correct.missing_step own_k, the default), the last written step with last_step
    assert got[:3] == [1, 1, 2] and got[4] == 1
    last = ReferenceTeacher(missing_step="last_step").corrections([CorrectionRequest(PENCILS, cases[2])])[0]
    assert _first_error(last.text) == 1
    assert got[3] is None  # no steps but the right answer: nothing to correct
    assert got[5] is None  # tag-less but correct: one step per line
    # steps given by the caller win over the raw text; tags inside a body are removed
    req = CorrectionRequest(PENCILS, "", steps=["4 * 12 = 48 </Step1><Answer>3</Answer>", "48 / 2 = 25"])
    assert _first_error(t.corrections([req])[0].text) == 2


def test_modes_agree():
    t = ReferenceTeacher()
    reqs = [_student(["4 * 12 = 48", "48 / 2 = 25"], "20"), _student(["4 * 12 = 48", "48 / 2 = 24", "19"], "19")]
    assert [o.text for o in t.corrections(reqs)] == [o.text for o in t.corrections(reqs, mode="stepwise")]
    with pytest.raises(ValueError):
        t.corrections(reqs, mode="other")


# ----------------------------------------------------------------------------------------------- planted errors


def _replace_numbers(text: str, mapping: dict[Fraction, Fraction], skip: tuple[int, int] = (0, 0)) -> str:
    """Replace numbers in `text` (outside the span `skip`) whose value is a key of `mapping`."""

    def sub(m: re.Match[str]) -> str:
        if skip[0] <= m.start() < skip[1]:
            return m.group(0)
        v = parse_number(m.group(0))
        return format_number(mapping[v]) if v in mapping else m.group(0)

    return NUM.sub(sub, text)


def _rewrite(step: RefStep, expr: str, value: Fraction, mapping: dict[Fraction, Fraction]) -> str:
    """The step's text with its equation replaced by `expr = value` and other mentions of changed values updated."""
    text = step_text(step)
    old = parse_number(step.value)
    eq = next((e for e in reversed(find_equations(text)) if old in (e.rhs_value, e.lhs_value)), None)
    new_eq = f"{show_expr(expr)} = {format_number(value)}"
    if eq is None:
        return new_eq
    text = _replace_numbers(text, mapping, skip=(eq.start, eq.end))
    eq = next(e for e in reversed(find_equations(text)) if old in (e.rhs_value, e.lhs_value))
    return text[: eq.start] + new_eq + text[eq.end :]


def _swap_number(expr: str, which: int, new: Fraction) -> str:
    matches = list(NUM.finditer(expr))
    m = matches[which]
    return expr[: m.start()] + format_number(new) + expr[m.end() :]


def _delta(x: Fraction, rng: random.Random) -> int:
    """A small nonzero change that keeps a positive number positive."""
    return rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if x <= 0 or x + d > 0])


def plant(problem: Problem, j: int, kind: str, rng: random.Random) -> tuple[list[str], str]:
    """The student's steps with one planted error at step j (1-based), later steps recomputed from it.

    kind "result": step j's arithmetic is right but its result is off ("48 / 2 = 25");
    kind "operand": step j uses a wrong operand ("46 / 2 = 23") with consistent arithmetic."""
    mapping: dict[Fraction, Fraction] = {}  # reference value -> the student's value
    texts: list[str] = []
    values: list[Fraction] = []
    for k, step in enumerate(problem.steps, 1):
        old = parse_number(step.value)
        expr = step.expr
        if k < j:
            texts.append(step_text(step))
            values.append(old)
            continue
        local = dict(mapping)
        if k > j:  # propagate earlier changes into this step's operands
            for idx, m in reversed(list(enumerate(NUM.finditer(expr)))):
                v = parse_number(m.group(0))
                if v in mapping:
                    expr = _swap_number(expr, idx, mapping[v])
            new = evaluate(expr)
        elif kind == "result":
            new = old + _delta(old, rng)
        else:
            operands = [parse_number(m.group(0)) for m in NUM.finditer(expr)]
            earlier = [i for i, v in enumerate(operands) if v in values]  # prefer a quantity found before
            idx = rng.choice(earlier or list(range(len(operands))))
            wrong = operands[idx] + _delta(operands[idx], rng)
            expr = _swap_number(expr, idx, wrong)
            local[operands[idx]] = wrong
            new = evaluate(expr)
        if new != old:
            mapping[old] = new
        texts.append(_rewrite(step, expr, new, local))
        values.append(new)
    return texts, format_number(values[-1])


def _location_rate(problems: list[Problem], kind: str, seed: int) -> tuple[float, list[str]]:
    rng = random.Random(seed)
    t = ReferenceTeacher()
    requests, planted = [], []
    for n, p in enumerate(problems):
        j = rng.randint(1, len(p.steps))
        try:
            bodies, answer = plant(p, j, kind, rng)
        except (ArithError, ZeroDivisionError):  # the change made a later step divide by zero
            continue
        xml = render_solution(bodies, answer)
        steps = step_texts(parse(xml)) if n % 2 else []  # half given as parsed steps, half parsed by the teacher
        requests.append(CorrectionRequest(p, xml, steps=steps))
        planted.append(j)
    outs = t.corrections(requests, mode="single_pass")
    misses = []
    for req, j, out in zip(requests, planted, outs, strict=True):
        got = _first_error(out.text)
        if got != j:
            misses.append(f"{req.problem.id}: planted {j}, located {got}")
    assert len(planted) >= 0.9 * len(problems)
    return 1 - len(misses) / len(planted), misses


@pytest.mark.parametrize("kind", ["result", "operand"])
def test_planted_errors_synthetic(kind):
    problems = generate_synthetic(400, seed=11, split="test")
    rate, misses = _location_rate(problems, kind, seed=1)
    print(f"\nsynthetic planted {kind}: located {rate:.1%} of {len(problems)}; misses: {misses[:5]}")
    assert rate >= MIN_RATE


@pytest.mark.parametrize("kind", ["result", "operand"])
def test_planted_errors_gsm8k(data_dir, kind):
    problems = _gsm8k_rows(data_dir, 300)
    assert len(problems) == 300
    rate, misses = _location_rate(problems, kind, seed=2)
    print(f"\ngsm8k planted {kind}: located {rate:.1%} of {len(problems)}; misses: {misses[:5]}")
    assert rate >= MIN_RATE
