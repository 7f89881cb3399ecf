"""Rule-based grading: extraction, equivalence through Math-Verify workers, reasons, timeouts, threads."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from workcount import assert_linear

from supercorrect import grading
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
ADVERSARIAL_TIMEOUT_S = 2.0  # hostile inputs never finish, so this only sets how long the tests wait for the kill
HANG_GUARD_S = 600.0  # fails a hung test; never a speed claim (no unit test here reads a clock)


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


BOXED_HOSTILE = {  # k "units"; the old timed test used k = 200_000 (1_000_000 braces)
    "bare commands": lambda k: "\\boxed" * k,
    "unclosed boxes": lambda k: "\\boxed{" * k,
    "open braces": lambda k: "{" * (5 * k),
    "spaced commands": lambda k: "\\boxed " * k,
}


def test_extract_boxed_deep_nesting():
    assert extract_boxed(r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}") == "{" * 5000 + "1" + "}" * 5000


@pytest.mark.parametrize("name", BOXED_HOSTILE)
def test_extract_boxed_linear_time(name):
    # counted steps inside grading.py (tests/workcount.py), not seconds: benchmarks/parser_speed.py times it
    assert_linear(BOXED_HOSTILE[name], extract_boxed, 1000, modules=(grading,))


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


ANSWER_HOSTILE = {  # k "units"; the old timed test used k = 100_000 to 1_000_000 characters
    "open tags": lambda k: "<Answer>" * k,
    "close tags": lambda k: "</Answer>" * k,
    "comma numbers": lambda k: "1," * (5 * k),
    "open angle then spaces": lambda k: "<" + " " * (10 * k),
    "dashes": lambda k: "-" * (10 * k),
    "one long number": lambda k: "1" * (10 * k),
    "unclosed fracs": lambda k: "\\frac{1}{" * k,
}


@pytest.mark.parametrize("name", ANSWER_HOSTILE)
def test_extract_answer_linear_time_on_hostile_text(name):
    assert_linear(ANSWER_HOSTILE[name], extract_answer, 1000, modules=(grading,))


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


class WorkerLog:
    """Counts the grader's worker processes: started, and killed (a timeout or a crash; not a clean stop)."""

    def __init__(self) -> None:
        self.started = 0
        self.killed = 0


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> WorkerLog:
    log = WorkerLog()

    class Counted(grading._Worker):
        stopping = False

        def __init__(self, ctx: object) -> None:
            super().__init__(ctx)
            log.started += 1

        def stop(self, grace_s: float = 0.5) -> None:
            self.stopping = True
            super().stop(grace_s)

        def kill(self) -> None:
            if not self.stopping:
                log.killed += 1
            super().kill()

    monkeypatch.setattr(grading, "_Worker", Counted)
    return log


def guarded(fn):  # type: ignore[no-untyped-def]
    """`fn()` in a thread, failing if it has not returned after HANG_GUARD_S: a guard against a hung grader,
    far above any healthy run, so no claim rests on it (the claims are the verdicts and the worker counts)."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as e:  # re-raised in the test's thread
            out.append(("error", e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    assert not t.is_alive(), f"grading hung for {HANG_GUARD_S} s"
    kind, value = out[0]
    if kind == "error":
        raise value  # type: ignore[misc]
    return value


def test_adversarial_inputs_are_bounded(workers: WorkerLog):
    # Bounded: every hostile input gets a verdict that is not "correct", and each one that ran past timeout_s
    # had its worker killed (the kill, not the input finishing, is what bounds the time).
    with Grader(workers=len(ADVERSARIAL), timeout_s=ADVERSARIAL_TIMEOUT_S) as g:
        grades = guarded(lambda: g.grade_many([(text, "5") for text in ADVERSARIAL.values()]))
        assert g.grade(r"\boxed{\sqrt{4}}", "2").correct  # the pool still grades afterwards
    for name, grade in zip(ADVERSARIAL, grades, strict=True):
        assert grade.reason in ("timeout", "wrong", "unparsable"), name
        assert not grade.correct, name
    timeouts = sum(g.reason == "timeout" for g in grades)
    assert timeouts >= 1, [g.reason for g in grades]  # the towers of powers cannot finish: the kill must work
    assert workers.killed == timeouts, (workers.killed, [g.reason for g in grades])


def test_grader_recovers_after_timeouts(workers: WorkerLog):
    items = [
        (ADVERSARIAL["tower of powers (latex)"], "5"),
        (r"\boxed{\sqrt{9}}", "3"),
        (r"\boxed{2^{10^{10}}}", "1"),
    ]
    with Grader(workers=1, timeout_s=ADVERSARIAL_TIMEOUT_S) as g:  # one worker: killed and replaced twice
        grades = guarded(lambda: g.grade_many(items))
        assert guarded(lambda: g.grade(r"\boxed{\frac{6}{4}}", "1.5")).correct
    assert [gr.reason for gr in grades] == ["timeout", "correct", "timeout"]
    assert (workers.started, workers.killed) == (3, 2)  # each timed-out worker killed, a fresh one graded next


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
    t.join(HANG_GUARD_S)
    assert [g.reason for g in out] == ["correct", "timeout"]
