"""Regression tests for the reference locator on real-solution patterns (issue 13): each cause of a wrong verdict
seen on real model solutions, and the reason code every verdict carries."""

from __future__ import annotations

import os
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workcount import assert_linear

from supercorrect import arith, grading, xmlformat
from supercorrect.arith import find_equations
from supercorrect.schema import Problem, RefStep
from supercorrect.teachers import reference
from supercorrect.teachers.base import CorrectionRequest
from supercorrect.teachers.reference import REASONS, ReferenceTeacher, locate_first_error, student_answer
from supercorrect.xmlformat import parse

EGGS = Problem(
    id="eggs",
    question="Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
    "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh "
    "duck egg. How much in dollars does she make every day at the farmers' market?",
    solution="Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day.",
    answer="18",
    steps=[RefStep(text="Janet sells 16 - 3 - 4 = 9 duck eggs a day.", expr="16-3-4", value="9"),
           RefStep(text="She makes 9 * 2 = $18 every day at the farmer's market.", expr="9*2", value="18")],
    source="gsm8k",
)  # fmt: skip
HOUSE = Problem(
    id="house",
    question="Josh buys a house for $80,000 and then puts in $50,000 in repairs. This increased the value of the "
    "house by 150%. How much profit did he make?",
    solution="",
    answer="70000",
    steps=[RefStep(text="80,000+50,000=$130,000", expr="80000+50000", value="130000"),
           RefStep(text="80,000*1.5=120,000", expr="80000*1.5", value="120000"),
           RefStep(text="120,000+80,000=$200,000", expr="120000+80000", value="200000"),
           RefStep(text="200,000-130,000=$70,000", expr="200000-130000", value="70000")],
    source="gsm8k",
)  # fmt: skip


def eqs(text: str) -> list[tuple[str, str, bool | None]]:
    return [(e.lhs, e.rhs, e.ok) for e in find_equations(text)]


# ----------------------------------------------------------------------------------------------- arith


def test_side_with_a_variable_is_algebra_not_an_error():
    (e,) = find_equations("10 - 4 = 1.5x")
    assert e.ok is None and e.algebra and e.rhs_value is None
    (e,) = find_equations("x^{14} = -2^{13}")  # MATH-style: the left side is a power of a variable
    assert e.ok is None and e.algebra and e.lhs_value is None
    assert eqs("2x+3=11") == [] and eqs("So 2x/3 = 12.") == [("/3", "12", None)]
    assert eqs("2 * 3 = 6kg") == [("2 * 3", "6", True)]  # a unit word is not a variable
    assert eqs("Step 2: -3 + 5 = 2") == [("-3 + 5", "2", True)] and eqs("is -3 / 2 = -1.5") == [("-3 / 2", "-1.5", True)]


def test_latex_text_and_boxes():
    assert eqs("\\[ \\text{Total cost} = \\$12 \\]") == []  # a restatement, not a computation
    assert eqs("\\[ \\text{Total} = \\$400 + \\$60 = \\$460 \\]") == [("\\$400 + \\$60", "\\$460", True)]
    assert eqs("9 * 2 = \\boxed{18}") == [("9 * 2", "18", True)]
    assert eqs("3 \\times 4 \\text{ apples} = 12") == [("3 \\times 4", "12", True)]
    assert eqs("10/3 \\approx 3.33") == [("10/3", "3.33", True)]


# ----------------------------------------------------------------------------------------------- locator


def test_algebra_step_is_not_an_arithmetic_error():
    steps = ["Let x be the eggs she sells: x = 16 - 3 - 4 = 9.", "Revenue 2x = 2 \\cdot 9 = 18.", "So 18 - 12 = 1.5x"]
    assert locate_first_error(EGGS, steps[:2], "18").index is None
    assert locate_first_error(EGGS, steps, "18").index is None


def test_latex_restatement_is_not_checked_as_an_equation():
    steps = ["She keeps \\(16 - 3 - 4 = 9\\) eggs.", "\\[ \\text{Daily earnings} = 9 \\times 2 = \\$18 \\]",
             "\\[ \\text{Total} = \\$18 \\]"]  # fmt: skip
    assert locate_first_error(EGGS, steps, "18").reason == "no_error"


def test_correct_alternative_route_and_own_results_are_usable():
    steps = ["He spends $80,000 + $50,000 = $130,000.", "The new value is $80,000 * 2.5 = $200,000.",
             "Profit: $200,000 - $130,000 = $70,000."]  # fmt: skip
    assert locate_first_error(HOUSE, steps, "70000").index is None
    # a route the reference never takes: 3 + 4 = 7 eggs used (regrouped), then 16 - 7
    assert locate_first_error(EGGS, ["She uses 3 + 4 = 7 eggs.", "16 - 7 = 9 left.", "9 * 2 = 18."], "18").index is None
    # an off-reference value the student derived is usable later: 16 * 2 = 32, 32 - 14 = 18
    v = locate_first_error(EGGS, ["All eggs: 16 * 2 = $32.", "Used eggs: 7 * 2 = $14.", "32 - 14 = $18."], "18")
    assert v.index is None


def test_zero_is_usable():
    v = locate_first_error(EGGS, ["16 - 3 - 4 = 9 eggs.", "On Sunday she sells 0 eggs.", "9 * 2 = 18."], "18")
    assert v.index is None


def test_boxed_answer_beats_the_last_number():
    raw = "16 - 3 - 4 = 9\n9 * 2 = 18\nSo the answer is \\boxed{18} (that is 2 dollars times 9 eggs)."
    assert student_answer(raw, []) == "18"
    out = ReferenceTeacher().corrections([CorrectionRequest(EGGS, raw)])[0]
    assert parse(out.text).first_error is None and out.reason == "no_error"


def test_final_answer_wrong_blames_the_first_off_reference_step_not_the_last():
    steps = ["Total cost 80,000 + 50,000 = $130,000.", "The increase is 130,000 * 1.5 = $195,000.",
             "New value 130,000 + 195,000 = $325,000.", "Profit 325,000 - 130,000 = $195,000."]  # fmt: skip
    v = locate_first_error(HOUSE, steps, "195000")
    assert (v.index, v.reason, v.kind) == (2, "off_reference_result", "value")
    assert "195,000" in v.cause and "80000 * 1.5 = 120000" in v.cause
    # nothing off the route but the answer is wrong: the last step, said plainly ...
    v = locate_first_error(EGGS, ["16 - 3 - 4 = 9", "9 * 2 = 18"], "20")
    assert (v.index, v.reason) == (2, "final_answer_only")
    # ... also when the answer is a correct intermediate: the answer step is wrong, not the computation
    v = locate_first_error(EGGS, ["16 - 3 - 4 = 9", "9 * 2 = 18", "So she makes 9."], "9")
    assert (v.index, v.reason) == (3, "final_answer_only")


def test_hard_findings_and_reasons():
    v = locate_first_error(EGGS, ["16 - 3 - 4 = 9", "9 * 2 = 16"], "16")
    assert (v.index, v.reason, v.kind) == (2, "arithmetic_error", "arithmetic")
    v = locate_first_error(EGGS, ["16 - 3 - 4 = 9", "9 * 37 = 333"], "333")  # 37: nothing gives it
    assert (v.index, v.reason) == (2, "unknown_operand")
    # an off-route step before an unknown operand or a false equation is the better guess
    v = locate_first_error(EGGS, ["16 + 3 = 19", "19 * 37 = 703"], "703")
    assert (v.index, v.reason) == (1, "off_reference_result")
    v = locate_first_error(EGGS, ["16 + 3 = 19", "19 - 3 = 10"], "10")
    assert (v.index, v.reason) == (1, "off_reference_result")
    assert set(REASONS) >= {"arithmetic_error", "unknown_operand", "off_reference_result", "derived_operand",
                            "unsupported_value", "final_answer_only", "no_error"}  # fmt: skip


@pytest.mark.parametrize("reason", ["arithmetic_error", "off_reference_result", "no_error"])
def test_teacher_output_carries_the_reason(reason):
    steps = {"arithmetic_error": ["16 - 3 - 4 = 9", "9 * 2 = 16"], "off_reference_result": ["16 - 3 = 13", "13 * 2 = 26"],
             "no_error": ["16 - 3 - 4 = 9", "9 * 2 = 18"]}[reason]  # fmt: skip
    answer = {"arithmetic_error": "16", "off_reference_result": "26", "no_error": "18"}[reason]
    out = ReferenceTeacher().corrections([CorrectionRequest(EGGS, "", steps=steps + [f"Answer: {answer}"])])[0]
    assert out.reason == reason


def test_operand_derivations_use_only_what_the_student_can_know():
    assert Fraction(0) in {Fraction(n) for n in (0,)}  # 0 is a constant (see test_zero_is_usable)
    # 14 is 13 + 1, but "n + 1" from a constant would make every number derivable: it stays an unknown operand
    p = Problem(id="p", question="He has 13 sets and sells them for $15 each.", solution="", answer="195",
                steps=[RefStep(text="13 * 15 = 195", expr="13*15", value="195")], source="gsm8k")  # fmt: skip
    v = locate_first_error(p, ["14 * 15 = 210"], "210")
    assert (v.index, v.reason) == (1, "unknown_operand")
    # a unit conversion of a given number is derivable: 90 minutes = 1.5 hours
    p = Problem(id="q", question="She walks 90 minutes at 4 km per hour. How far?", solution="", answer="6",
                steps=[RefStep(text="90 / 60 = 1.5 hours", expr="90/60", value="1.5"),
                       RefStep(text="1.5 * 4 = 6 km", expr="1.5*4", value="6")], source="gsm8k")  # fmt: skip
    assert locate_first_error(p, ["She walks 4 * 1.5 = 6 km."], "6").index is None


def test_wrong_answer_blames_where_the_wrong_value_comes_from():
    trains = Problem(
        id="trains", question="Two trains each travel 80 miles west, then the next day 150 miles north. What's the "
        "distance covered by each train in the two days?", solution="", answer="230",
        steps=[RefStep(text="2*80=160", expr="2*80", value="160"), RefStep(text="150*2=300", expr="150*2", value="300"),
               RefStep(text="300+160=460", expr="300+160", value="460"), RefStep(text="460/2=230", expr="460/2", value="230")],
        source="gsm8k",
    )  # fmt: skip
    # a restated given number is not blamed for the computation after it (restatements are usually right)
    steps = ["Both trains: 2 × 80 = 160 miles.", "On day two each travels 150 miles.", "Total: 160 + 150 = 310 miles."]
    v = locate_first_error(trains, steps, "310")
    assert (v.index, v.reason) == (3, "off_reference_result")
    # the wrong final value is first stated in step 2; the last step only repeats it
    steps = ["Day one: 80 miles.", "Day two: 150 miles, so 80 miles is not the answer; it is 150.", "So 150 miles."]
    v = locate_first_error(trains, steps, "150")
    assert (v.index, v.reason) == (2, "final_answer_only") and "first appears in step 2" in v.cause
    # a computed final value that an earlier (wrong) step already produced: blamed there
    v = locate_first_error(trains, ["Day one: 2 × 80 = 160 miles.", "Day two: 150 miles.", "So 80 + 80 = 160."], "160")
    assert (v.index, v.reason) == (1, "final_answer_only")


FUZZ = settings(max_examples=int(os.environ.get("SC_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
PIECES = st.sampled_from(["16", "3", "4", "9", "2", "18", "0", "-", "+", " * ", " / ", " = ", "x", "\\boxed{",
                          "}", "\\text{eggs}", "\\[", "\\]", "$", "%", ".", "1.5x", "^{2}", "(", ")", " ", "eggs"])  # fmt: skip


@FUZZ
@given(st.lists(st.lists(PIECES, max_size=14).map("".join), max_size=6), st.one_of(st.none(), st.text(max_size=20)))
def test_locator_never_raises_and_stays_in_range(steps, answer):
    v = locate_first_error(EGGS, steps, answer)
    assert v.reason in REASONS
    # a missing step after the last one (correct.missing_step own_k) is one past it
    assert v.index is None or 1 <= v.index <= max(len(steps), 1) + (v.reason == "missing_step")
    last = locate_first_error(EGGS, steps, answer, missing_step="last_step")
    assert last.reason != "missing_step" and (last.index is None or 1 <= last.index <= max(len(steps), 1))
    assert (v.index is None) == (v.reason == "no_error")


def test_plain_text_answer():
    assert student_answer("", ["So she makes $18 every day (9 eggs x $2)."]) == "18"
    assert student_answer("", ["16 - 7 = 9", "The answer is: 18 dollars, 2 per egg"]) == "18"
    assert student_answer("", ["#### 57,500"]) == "57,500"
    assert student_answer("Thus \\boxed{18}. (2 x 9)", []) == "18"
    assert student_answer("", ["no numbers"]) is None
    assert student_answer("", ["**Final answer:** -10"]) == "-10" and student_answer("", ["It was -3 degrees."]) == "-3"


def test_step_headers_and_list_markers_are_not_quantities():
    steps = ["## Step 1: Count the eggs she uses", "She uses 3 + 4 = 7 eggs.", "## Step 5: Find what is left",
             "1. 16 - 7 = 9 eggs", "9 * 2 = 20"]  # fmt: skip
    v = locate_first_error(EGGS, steps, "20")
    assert (v.index, v.reason) == (5, "arithmetic_error")
    v = locate_first_error(EGGS, steps[:4] + ["She earns 9 * 2 = 18."], "18")
    assert v.index is None


def test_approximately_and_unit_facts():
    assert eqs("100/3 ≈ 33") == [("100/3", "33", True)] and eqs("100/3 = 33") == [("100/3", "33", False)]
    assert eqs("2/3 \\approx 0.67") == [("2/3", "0.67", True)] and eqs("7/3 ≈ 3") == [("7/3", "3", False)]
    # 16 ounces in a pound is not given, but a fact: soft, so a correct solution is not flagged
    p = Problem(id="oz", question="A bag holds 2 pounds of rice. How many ounces is that?", solution="",
                answer="32", steps=[RefStep(text="2*16=32", expr="2*16", value="32")], source="gsm8k")  # fmt: skip
    assert locate_first_error(p, ["There are 16 ounces in a pound, so 2 * 16 = 32 ounces."], "32").index is None
    v = locate_first_error(p, ["There are 12 ounces in a pound, so 2 * 12 = 24 ounces."], "24")
    assert v.index == 1 and v.reason == "off_reference_result"


def test_rounded_thirds_carry_their_exact_value():
    assert eqs("3.33 × 60 = 200") == [("3.33 × 60", "200", True)] and eqs("0.67 * 120 = 80") == [("0.67 * 120", "80", True)]
    assert eqs("1.5 * 80 = 121") == [("1.5 * 80", "121", False)] and eqs("0.25 * 80 = 21") == [("0.25 * 80", "21", False)]


def test_a_sum_missing_a_term_is_not_on_the_reference_route():
    p = Problem(id="run", question="He runs 3 hours the first day and half as much the other two days. 60 miles a "
                "week. How fast?", solution="", answer="10",
                steps=[RefStep(text="3/2=1.5", expr="3/2", value="1.5"), RefStep(text="3+1.5+1.5=6", expr="3+1.5+1.5", value="6"),
                       RefStep(text="60/6=10", expr="60/6", value="10")], source="gsm8k")  # fmt: skip
    v = locate_first_error(p, ["Half as much is 3 / 2 = 1.5 hours.", "Total: 3 + 1.5 = 4.5 hours.", "60 / 4.5 ≈ 13.33"], "13.33")
    assert (v.index, v.reason) == (2, "off_reference_result")


HOSTILE_STEPS = {  # about k "units"; k = 100 gives the sizes the old timed test used
    "many equations per step": lambda k: ["9 * 37 = 333 and 12 + 7 = 19 " * 40] * (3 * k),
    "many steps": lambda k: [f"{n} * 3 = {3 * n}" for n in range(30 * k)],
    "unclosed boxes": lambda k: ["\\boxed{" * (200 * k)],
    "open parentheses": lambda k: ["(" * (500 * k) + "= 1 + 1"],
    "algebra": lambda k: ["1.5x = " * (100 * k)],
}


@pytest.mark.parametrize("name", HOSTILE_STEPS)
def test_locator_is_linear_on_adversarial_input(name):
    # steps counted inside the locator and the parsers it calls (tests/workcount.py), not seconds
    def locate(steps: list[str]) -> None:
        locate_first_error(EGGS, steps, student_answer("", steps))

    assert_linear(HOSTILE_STEPS[name], locate, 5, modules=(reference, arith, grading, xmlformat))
