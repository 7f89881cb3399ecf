"""`grading.extractor: qwen`: the Qwen2.5-Math harness's extraction rules on known cases, and the Grader using it."""

from __future__ import annotations

import random

import pytest

from supercorrect.extract_qwen import clean, extract_answer_qwen
from supercorrect.grading import Grader, extract_answer, get_extractor

CASES = [
    # (model text, extracted answer, rule)
    ("so the total is \\boxed{\\dfrac{1}{2}}.", "\\frac{1}{2}", "boxed"),
    ("first \\boxed{3} then \\boxed{7}", "7", "boxed"),  # the last box
    ("\\boxed{\\frac{a}{b+{c}}} done", "\\frac{a}{b+{c}}", "boxed"),  # nested braces
    ("cut off \\boxed{12", "12", "boxed"),  # unclosed box: to the end of the text
    ("$\\boxed 5$ is it", "5", "boxed"),  # bare box: up to the next $
    ("The answer is 18 dollars.", "18", "answer_phrase"),
    ("the answer is: 5/8.", "\\frac{5}{8}", "answer_phrase"),
    ("The final answer is 42", "42", "answer_phrase"),
    ("Final Answer: The final answer is $\\frac12$. I hope it is correct.", "\\frac{1}{2}", "final_answer"),
    ("There are 1,234 apples and -3.5 pears", "-3.5", "last_number"),
    ("<Step1>3 + 4 = 7</Step1><Answer>7</Answer>", "7", "last_number"),  # tags are not read, the number is
    ("\\boxed{90^\\circ}", "90", "boxed"),
    ("\\boxed{\\$10.50}", "10.50", "boxed"),
    ("The answer is 50\\%", "50", "answer_phrase"),
    ("\\boxed{x = 4}", "4", "boxed"),
    ("\\boxed{4.00}", "4", "boxed"),
    ("\\boxed{\\left( 1, 2 \\right)}", "(1,2)", "boxed"),
    ("\\boxed{10 \\text{ cm}}", "10", "boxed"),
    ("\\boxed{\\frac1{72}}", "\\frac{1}{72}", "boxed"),
]


@pytest.mark.parametrize(("text", "answer", "source"), CASES)
def test_known_cases(text: str, answer: str, source: str) -> None:
    got = extract_answer_qwen(text)
    assert (got.answer, got.source) == (answer, source)


def test_no_answer() -> None:
    assert extract_answer_qwen("no digits here").answer is None
    assert extract_answer_qwen("").answer is None
    assert extract_answer_qwen("ends with boxed").answer is None


def test_protocols_differ_where_they_should() -> None:
    text = "<Answer>12</Answer>\nCheck: 3 apples."
    assert extract_answer(text).answer == "12"  # ours: the <Answer> block
    assert extract_answer_qwen(text).answer == "3"  # Qwen's: no tags, the last number
    with Grader(extractor="qwen") as g:
        assert not g.grade(text, "12").correct
        assert g.grade("The answer is \\dfrac{1}{2}.", "0.5").correct
    with Grader() as g:
        assert g.grade(text, "12").correct
    with pytest.raises(ValueError):
        get_extractor("nope")


def test_clean_leaves_algebra_alone() -> None:
    assert clean("a+b") == "a+b"  # no one-letter "units" removed
    assert clean("\\sqrt2") == "\\sqrt{2}"
    assert clean("k = 7") == "7"


def test_untrusted_text_never_raises() -> None:
    rng = random.Random(0)
    alphabet = "\\boxed{}$0123456789.,-/ theanswerisfinal%^circ\n:=xtext"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        out = extract_answer_qwen(text)
        assert out.answer is None or isinstance(out.answer, str)
