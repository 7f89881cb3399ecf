"""Rule-based grading: extraction, equivalence through Math-Verify workers, reasons, timeouts, threads."""

from __future__ import annotations

import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supercorrect.grading import (
    Extraction,
    Grade,
    Grader,
    _fast_verdict,
    answers_match,
    extract_answer,
    extract_boxed,
)

FUZZ = settings(max_examples=int(os.environ.get("SC_FUZZ_EXAMPLES", "200")), deadline=None)
ADVERSARIAL_TIMEOUT_S = 2.0
# A timed-out call returns right after the kill; the next call may wait for a fresh worker to start (~0.5 s).
SLACK_S = 2.5


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=2, timeout_s=20.0) as g:
        yield g


# ---------------------------------------------------------------------------------------------- extract_boxed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{5}.", "5"),
        (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\boxed{3}}", "3"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5.", "5"),
        (r"$\boxed \pi$", r"\pi"),
        (r"\boxed {x+1}", "x+1"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{(3,\frac{\pi}{2})}", r"(3,\frac{\pi}{2})"),
        (r"\boxed{6} and then \boxed{7", "6"),  # truncated last box is skipped
        (r"\boxed{ 4 }", "4"),
        (r"\boxed{}", ""),
        (r"\boxedx{3}", None),
        (r"\boxed{", None),
        ("no box here", None),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_boxed_deep_nesting_and_linear_time():
    assert extract_boxed(r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}") == "{" * 5000 + "1" + "}" * 5000
    start = time.perf_counter()
    for text in ("\\boxed" * 200_000, "\\boxed{" * 200_000, "{" * 1_000_000, "\\boxed " * 200_000):
        extract_boxed(text)
    assert time.perf_counter() - start < 5.0


# --------------------------------------------------------------------------------------------- extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<Step1>2+2</Step1><Answer>4</Answer>", Extraction("4", "answer_tag")),
        (r"<Answer>So it is \boxed{\frac{1}{2}}.</Answer>", Extraction(r"\frac{1}{2}", "answer_tag")),
        ("<answer> x = 3 </ANSWER>", Extraction("x = 3", "answer_tag")),
        ("<Answer>1</Answer> <Answer>2</Answer> <Answer>3", Extraction("2", "answer_tag")),  # last complete
        (r"\boxed{9} <Answer>8</Answer>", Extraction("8", "answer_tag")),
        (r"<Answer> </Answer> \boxed{9}", Extraction("9", "boxed")),  # empty tag falls through
        (r"The total is \boxed{42} dollars, 7 left.", Extraction("42", "boxed")),
        ("She pays 3 + 4 = 7 dollars.", Extraction("7", "last_number")),
        ("The result is -12.", Extraction("-12", "last_number")),
        ("So 3-5 gives", Extraction("5", "last_number")),
        ("Total: $1,234.50.", Extraction("1,234.50", "last_number")),
        ("It is 1 234 in total", Extraction("1 234", "last_number")),
        ("ratio 3/4", Extraction("3/4", "last_number")),
        (r"ratio \frac{3}{4}", Extraction(r"\frac{3}{4}", "last_number")),
        ("items 1,2,3", Extraction("3", "last_number")),
        ("I have no idea.", Extraction(None, None)),
        ("", Extraction(None, None)),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_linear_time_on_hostile_text():
    hostile = [
        "<Answer>" * 100_000,
        "</Answer>" * 100_000,
        "1," * 500_000,
        "<" + " " * 1_000_000,
        "-" * 1_000_000,
        "1" * 1_000_000,
        "\\frac{1}{" * 100_000,
    ]
    start = time.perf_counter()
    for text in hostile:
        extract_answer(text)
    assert time.perf_counter() - start < 8.0


@FUZZ
@given(st.text())
def test_extractors_never_raise_on_arbitrary_text(text):
    assert isinstance(extract_answer(text), Extraction)
    assert extract_boxed(text) is None or isinstance(extract_boxed(text), str)


@FUZZ
@given(st.text(alphabet=list("\\boxedfbx{}<>/Answer $.,-0123456789 \n"), max_size=300))
def test_extractors_never_raise_on_latexish_text(text):
    result = extract_answer(text)
    assert result.answer is None or result.source in ("answer_tag", "boxed", "last_number")
    extract_boxed(text)


@FUZZ
@given(st.text(max_size=80), st.text(max_size=80))
def test_fast_path_never_raises(pred, gold):
    assert _fast_verdict(pred, gold) in (None, "correct", "wrong", "no_answer")


# ---------------------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("18", "18"),
        ("18.00", "18"),
        ("$1,234", "1234"),
        ("50%", "50"),
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac{1}{2}", r"\frac12"),
        (r"\frac{2}{4}", "0.5"),
        ("x=3", "3"),
        (r"(3,\frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)"),
        ("[-2, 7]", "[-2,7]"),
        (r"x \in [-2,7]", "[-2,7]"),
        (r"(-\infty, 3)", r"(-\infty,3)"),
        (r"\{2, 1\}", r"\{1,2\}"),
        (r"10\sqrt{2}", r"\sqrt{200}"),
        ("x**2+1", "x^2+1"),
        (r"\text{(B)}", "B"),
        ("The final answer is $42$.", "42"),
    ],
)
def test_equivalent_answers_are_correct(grader, pred, gold):
    grade = grader.grade(f"<Answer>{pred}</Answer>", gold)
    assert grade == Grade(True, "correct", pred, "answer_tag")


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("5", "6"),
        ("0.51", r"\frac{1}{2}"),
        ("(-2,7)", "[-2,7]"),
        (r"10\sqrt{2}", "10"),
        (r"(-\infty, 3)", "3"),
        ("(1,2)", "(2,1)"),
        ("x=4", "3"),
    ],
)
def test_different_answers_are_wrong(grader, pred, gold):
    grade = grader.grade(rf"\boxed{{{pred}}}", gold)
    assert (grade.correct, grade.reason, grade.predicted, grade.source) == (False, "wrong", pred, "boxed")


def test_reasons(grader):
    assert grader.grade("I could not solve it.", "4") == Grade(False, "no_answer", None, None)
    assert grader.grade("<Answer>{</Answer>", "4").reason == "unparsable"
    assert grader.grade(r"\boxed{\frac{x}{", "4") == Grade(False, "no_answer", None, None)  # truncated box
    assert grader.grade(r"\boxed{\frac{1}{", "4").source == "last_number"  # ... falls back to the last number
    assert grader.grade(r"<Answer>\frac{</Answer>", "4").reason == "unparsable"
    assert grader.grade("so the answer is 4", "4").reason == "correct"


def test_fast_path_needs_no_worker():
    # A worker could never answer within a microsecond, so these must be decided in the calling process.
    with Grader(timeout_s=1e-6) as g:
        items = [
            ("\\boxed{1,234}", "1234"),
            ("<Answer>$18.</Answer>", "18"),
            ("=> 7", "8"),
            (r"\boxed{\dfrac12}", r"\frac12"),
        ]
        assert [gr.reason for gr in g.grade_many(items)] == ["correct", "correct", "wrong", "correct"]


def test_grade_many_keeps_order_and_shows_progress(grader):
    items = [(rf"\boxed{{{i}/2}}", r"\frac{" + str(i) + "}{2}") for i in range(1, 7)] + [("nothing", "1")]
    grades = grader.grade_many(items, desc="test grading")
    assert [g.reason for g in grades] == ["correct"] * 6 + ["no_answer"]
    assert [g.predicted for g in grades[:6]] == [f"{i}/2" for i in range(1, 7)]


def test_answers_match():
    assert answers_match(r"\frac{2}{4}", "0.5") == Grade(True, "correct", r"\frac{2}{4}", None)
    assert answers_match("3", "4").reason == "wrong"
    assert answers_match("", "4").reason == "no_answer"


def test_closed_grader_refuses_work():
    g = Grader()
    g.close()
    assert g.grade(r"\boxed{2}", "2").correct  # fast path still answers
    with pytest.raises(RuntimeError, match="closed"):
        g.grade(r"\boxed{\sqrt{4}}", "2")


def test_invalid_settings():
    with pytest.raises(ValueError):
        Grader(workers=0)
    with pytest.raises(ValueError):
        Grader(timeout_s=0)


# ----------------------------------------------------------------------------------------- timeouts, threads

ADVERSARIAL = {
    "tower of powers (python)": r"\boxed{10**10**10}",
    "tower of powers (latex)": r"\boxed{2^{2^{2^{2^{99}}}}}",
    "5000 nested braces": r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "million-digit number": "The answer is " + "7" * 1_000_000,
}


def test_adversarial_inputs_are_bounded():
    with Grader(workers=len(ADVERSARIAL), timeout_s=ADVERSARIAL_TIMEOUT_S) as g:
        g.grade_many([(r"\boxed{\sqrt{4}}", "2")] * len(ADVERSARIAL))  # start workers before timing anything
        start = time.perf_counter()
        grades = g.grade_many([(text, "5") for text in ADVERSARIAL.values()])
        elapsed = time.perf_counter() - start
    for name, grade in zip(ADVERSARIAL, grades, strict=True):
        assert grade.reason in ("timeout", "wrong", "unparsable"), name
        assert not grade.correct, name
    assert elapsed < ADVERSARIAL_TIMEOUT_S + SLACK_S, f"{elapsed:.1f}s"


def test_grader_recovers_after_timeouts():
    items = [
        (ADVERSARIAL["tower of powers (latex)"], "5"),
        (r"\boxed{\sqrt{9}}", "3"),
        (r"\boxed{2^{10^{10}}}", "1"),
    ]
    with Grader(workers=1, timeout_s=ADVERSARIAL_TIMEOUT_S) as g:  # one worker: killed and replaced twice
        start = time.perf_counter()
        grades = g.grade_many(items)
        elapsed = time.perf_counter() - start
        assert g.grade(r"\boxed{\frac{6}{4}}", "1.5").correct
    assert [gr.reason for gr in grades] == ["timeout", "correct", "timeout"]
    assert elapsed < 2 * (ADVERSARIAL_TIMEOUT_S + SLACK_S), f"{elapsed:.1f}s"


def test_grading_from_worker_threads():
    results: dict[int, Grade] = {}

    def run(i: int, g: Grader) -> None:
        results[i] = g.grade(rf"\boxed{{\sqrt{{{i * i}}}}}", str(i))

    with Grader(workers=2, timeout_s=20.0) as shared:
        threads = [threading.Thread(target=run, args=(i, shared)) for i in range(1, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(results[i].correct for i in range(1, 5)), results

    # A grader created and used entirely off the main thread, including a timeout (no signal.alarm involved).
    out: list[Grade] = []

    def own() -> None:
        with Grader(workers=1, timeout_s=ADVERSARIAL_TIMEOUT_S) as g:
            out.append(g.grade(r"\boxed{\frac{3}{6}}", "0.5"))
            out.append(g.grade(ADVERSARIAL["tower of powers (latex)"], "5"))

    t = threading.Thread(target=own)
    t.start()
    t.join(60)
    assert [g.reason for g in out] == ["correct", "timeout"]
