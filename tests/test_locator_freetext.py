"""The reference locator on free-text solutions of stronger models (issue 13 part 3): LaTeX (`\\frac`, `\\times`,
`\\$`, `\\boxed{}`, display math over several lines, `align`), thousands commas, percent, letter names, and
verification clauses ("Check: 65 / 13 = 5", the HT checkpoint's `<Key>` line) that must be checked but are never
the step's result. Hand-written cases on GSM8K test problems 4-10 (the reference is the GSM8K annotation); they
are tests, not tuning data: each states what a careful reader would label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supercorrect.arith import find_equations
from supercorrect.cli import main
from supercorrect.data.loaders import gsm8k_row_to_problem
from supercorrect.schema import Problem, RefStep
from supercorrect.teachers.base import CorrectionRequest
from supercorrect.teachers.reference import REASONS, ReferenceTeacher, locate_first_error, student_answer

GSM8K = {  # GSM8K test rows 4, 5, 8, 9, 10 (question, annotated solution)
    "wendi": ("Every day, Wendi feeds each of her chickens three cups of mixed chicken feed, containing seeds, mealworms "
              "and vegetables to help keep them healthy.  She gives the chickens their feed in three separate meals. In "
              "the morning, she gives her flock of chickens 15 cups of feed.  In the afternoon, she gives her chickens "
              "another 25 cups of feed.  How many cups of feed does she need to give her chickens in the final meal of "
              "the day if the size of Wendi's flock is 20 chickens?",
              "If each chicken eats 3 cups of feed per day, then for 20 chickens they would need 3*20=<<3*20=60>>60 "
              "cups of feed per day.\nIf she feeds the flock 15 cups of feed in the morning, and 25 cups in the "
              "afternoon, then the final meal would require 60-15-25=<<60-15-25=20>>20 cups of chicken feed.\n#### 20"),
    "kylar": ("Kylar went to the store to buy glasses for his new apartment. One glass costs $5, but every second glass "
              "costs only 60% of the price. Kylar wants to buy 16 glasses. How much does he need to pay for them?",
              "The discount price of one glass is 60/100 * 5 = $<<60/100*5=3>>3.\nIf every second glass is cheaper, "
              "that means Kylar is going to buy 16 / 2 = <<16/2=8>>8 cheaper glasses.\nSo for the cheaper glasses, "
              "Kylar is going to pay 8 * 3 = $<<8*3=24>>24.\nAnd for the regular-priced glasses, Kylar will pay 8 * 5 "
              "= $<<8*5=40>>40.\nSo in total Kylar needs to pay 24 + 40 = $<<24+40=64>>64 for the glasses he wants to "
              "buy.\n#### 64"),
    "john": ("John drives for 3 hours at a speed of 60 mph and then turns around because he realizes he forgot something "
             "very important at home.  He tries to get home in 4 hours but spends the first 2 hours in standstill "
             "traffic.  He spends the next half-hour driving at a speed of 30mph, before being able to drive the "
             "remaining time of the 4 hours going at 80 mph.  How far is he from home at the end of those 4 hours?",
             "When he turned around he was 3*60=<<3*60=180>>180 miles from home\nHe was only able to drive 4-2=<<4-2=2>>2 "
             "hours in the first four hours\nIn half an hour he goes 30*.5=<<30*.5=15>>15 miles\nHe then drives another "
             "2-.5=<<2-.5=1.5>>1.5 hours\nIn that time he goes 80*1.5=<<80*1.5=120>>120 miles\nSo he drove "
             "120+15=<<120+15=135>>135 miles\nSo he is 180-135=<<180-135=45>>45 miles away from home\n#### 45"),
    "eliza": ("Eliza's rate per hour for the first 40 hours she works each week is $10. She also receives an overtime pay "
              "of 1.2 times her regular hourly rate. If Eliza worked for 45 hours this week, how much are her earnings "
              "for this week?",
              "Eliza is entitled to 45 -40 = <<45-40=5>>5 hours overtime pay.\nHer hourly rate for the overtime pay is "
              "$10 x 1.2 = $<<10*1.2=12>>12.\nSo, Eliza will receive $12 x 5 =$<<12*5=60>>60 for overtime pay.\nHer "
              "regular weekly earning is $10 x 40 = $<<10*40=400>>400.\nThus, Eliza will receive a total of $400 + $60 "
              "= $<<400+60=460>>460 for this week's work.\n#### 460"),
    "downloads": ("A new program had 60 downloads in the first month. The number of downloads in the second month was "
                  "three times as many as the downloads in the first month, but then reduced by 30% in the third month. "
                  "How many downloads did the program have total over the three months?",
                  "The number of downloads of the program in the second month increased to 3*60 = <<3*60=180>>180\nIn "
                  "the first two months, the total number of downloads of the program was 180+60 = <<180+60=240>>240\n"
                  "In the third month, the number of downloads of the program reduced by 30/100*180 = "
                  "<<30/100*180=54>>54\nThere were 180-54 = <<180-54=126>>126 downloads in the third month.\nIn the "
                  "three months, the total number of downloads of the program was 126+240 = <<126+240=366>>366\n"
                  "#### 366"),
}  # fmt: skip


def problem(name: str) -> Problem:
    question, answer = GSM8K[name]
    return gsm8k_row_to_problem({"question": question, "answer": answer}, 0, split="test")


def blame(name: str, steps: list[str]) -> tuple[int | None, str]:
    """0-based index of the blamed step (None: judged correct) and the reason code, as locate-bench reads it."""
    verdict, _ = ReferenceTeacher().locate(CorrectionRequest(problem(name), "\n\n".join(steps), steps))
    assert verdict.reason in REASONS
    return (None if verdict.index is None else verdict.index - 1), verdict.reason


CORRECT = {
    "latex_display": ("wendi", [
        "To find out how much feed Wendi needs for the final meal, we first calculate the total daily feed.",
        "Each chicken gets 3 cups per day and there are 20 chickens:\n\\[ 20 \\times 3 = 60 \\text{ cups} \\]",
        "She already gave \\(15 + 25 = 40\\) cups in the morning and afternoon.",
        "So the final meal needs \\(60 - 40 = 20\\) cups.\n\n\\[\\boxed{20}\\]"]),
    "percent_frac_dollars": ("kylar", [
        "The price of a discounted glass is \\(60\\%\\) of \\$5:\n\\[ 0.60 \\times 5 = 3 \\text{ dollars} \\]",
        "Every second glass is discounted, so there are \\(\\frac{16}{2} = 8\\) discounted glasses.",
        "Full-price glasses cost \\(8 \\times \\$5 = \\$40\\), discounted ones cost \\(8 \\times \\$3 = \\$24\\).",
        "Total: \\(\\$40 + \\$24 = \\$64\\).\n\n**Answer:** \\(\\boxed{64}\\)"]),
    "own_route_pairs": ("kylar", [
        "A pair of glasses (one full price, one at 60%) costs \\(5 + 0.6 \\cdot 5 = 5 + 3 = 8\\) dollars.",
        "16 glasses make \\(16 / 2 = 8\\) pairs, so he pays \\(8 \\cdot 8 = 64\\) dollars.", "#### 64"]),
    "multi_line_align": ("john", [
        "On the way out:\n\\[\n\\begin{aligned}\n3 \\times 60 &= 180 \\text{ miles}\n\\end{aligned}\n\\]",
        "On the way back he drives half an hour at 30 mph and the remaining \\(4 - 2 - 0.5 = 1.5\\) hours at 80 mph:"
        "\n\\[\n0.5 \\times 30 + 1.5 \\times 80\n= 15 + 120\n= 135\n\\]",
        "So he is \\(180 - 135 = 45\\) miles from home.\n\nThe answer is \\(\\boxed{45}\\)."]),
    "thousands_and_verify": ("eliza", [
        "Regular pay for 40 hours: \\(40 \\times \\$10 = \\$400\\).",
        "Overtime rate: \\(1.2 \\times \\$10 = \\$12\\) per hour, for \\(45 - 40 = 5\\) hours: \\(5 \\times 12 = \\$60\\)."
        "\nLet's verify: 60 / 5 = 12 per hour.",
        "Total earnings: \\(\\$400 + \\$60 = \\$460\\).\n\nSo Eliza earns \\(\\boxed{460}\\) dollars."]),
    "complement_percent": ("downloads", [
        "Second month: \\(3 \\times 60 = 180\\) downloads.",
        "Third month: a 30% reduction gives \\(180 \\times (1 - 0.30) = 180 \\times 0.7 = 126\\) downloads.",
        "Total: \\(60 + 180 + 126 = 366\\).\n\n\\boxed{366}"]),
    "no_box_inline_math_last": ("kylar", [
        "He buys 16 glasses; 8 of them are discounted to 60% of 5 dollars, \\(0.6 \\times 5 = 3\\) dollars each.",
        "Cost: \\(8 \\times 5 + 8 \\times 3 = 40 + 24 = 64\\)."]),
}  # fmt: skip


def test_inline_math_is_no_parenthesis_for_the_answer():
    assert student_answer("", ["He buys 16 glasses.", "Cost: \\(40 + 24 = 64\\)."]) == "64"
    assert student_answer("", ["She makes $18 every day (9 eggs x $2)."]) == "18"  # a real aside still is one


@pytest.mark.parametrize("case", sorted(CORRECT))
def test_correct_free_text_solutions_are_not_flagged(case):
    name, steps = CORRECT[case]
    assert blame(name, steps) == (None, "no_error")


ERRONEOUS = {  # the first wrong step as a careful reader labels it
    "percent_off_misread": ("kylar", 0, [
        "The discounted price is 60% off, so a discounted glass costs \\(5 \\times 0.4 = 2\\) dollars.",
        "He buys 8 glasses at \\$5 and 8 at \\$2: \\(8 \\times 5 + 8 \\times 2 = 40 + 16 = 56\\).", "\\(\\boxed{56}\\)"]),
    "forgot_the_traffic": ("john", 1, [
        "John is \\(3 \\times 60 = 180\\) miles from home when he turns around.",
        "He drives half an hour at 30 mph, \\(15\\) miles, and the remaining 2 hours at 80 mph: "
        "\\(2 \\times 80 = 160\\) miles.",
        "In total he drives \\(15 + 160 = 175\\) miles back, so he is \\(180 - 175 = 5\\) miles from home. \\boxed{5}"]),
    "all_hours_at_regular_rate": ("eliza", 2, [
        "Eliza works \\(45 - 40 = 5\\) overtime hours.", "Her overtime rate is \\(1.2 \\times 10 = 12\\) dollars.",
        "She earns \\(45 \\times 10 = 450\\) at the regular rate plus \\(5 \\times 12 = 60\\) overtime, so "
        "\\(450 + 60 = 510\\).", "\\boxed{510}"]),
    "false_product_in_display": ("wendi", 0, [
        "The flock needs\n\\[\n20 \\times 3\n= 80\n\\]\ncups a day.",
        "She still has to give \\(80 - 15 - 25 = 40\\) cups. \\(\\boxed{40}\\)"]),
    "false_product_in_align": ("john", 0, [
        "\\[\n\\begin{aligned}\n3 \\times 60 &= 160 \\\\\n160 - 135 &= 25\n\\end{aligned}\n\\]",
        "He is \\(\\boxed{25}\\) miles from home."]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ERRONEOUS))
def test_erroneous_free_text_solutions_blame_the_first_wrong_step(case):
    name, label, steps = ERRONEOUS[case]
    assert blame(name, steps)[0] == label


# ----------------------------------------------------------------------------------------------- verification


def test_check_clause_is_never_the_step_result():
    """The HT checkpoint writes `Key: ... Check: 65 / 13 = 5.` after a product: 5 is given, not the step's result,
    so the step is on the reference's route; the real error two steps on is found."""
    p = Problem(id="mia", question="Mia bakes 5 trays of 13 cookies. She eats 15. She bakes 16 more. How many cookies "
                "does she have?", solution="", answer="66",
                steps=[RefStep(text="5 * 13 = 65", expr="5*13", value="65"),
                       RefStep(text="65 - 15 = 50", expr="65-15", value="50"),
                       RefStep(text="50 + 16 = 66", expr="50+16", value="66")], source="synthetic")  # fmt: skip
    key = "Key: Multiply the two quantities 5 and 13: 5 * 13 = 65. Check: 65 / 13 = 5."
    steps = [f"Mia bakes 5 * 13 = 65 cookies.\n{key}", "After eating 15, she has 65 - 15 = 62 cookies.",
             "With 16 more, she has 62 + 16 = 78 cookies."]
    v = locate_first_error(p, steps, "78")
    assert (v.index, v.reason) == (2, "arithmetic_error")
    right = [f"Mia bakes 5 * 13 = 65 cookies.\n{key}", "After eating 15, she has 65 - 15 = 50 cookies.",
             "With 16 more, she has 50 + 16 = 66 cookies."]
    assert locate_first_error(p, right, "66").index is None
    # a false check is still a false equation of that step
    v = locate_first_error(p, ["Mia bakes 5 * 13 = 65 cookies.\nCheck: 65 / 13 = 6.", *right[1:]], "66")
    assert (v.index, v.reason) == (1, "arithmetic_error")
    # "checks" and "checked" are words, not a verification clause; "to check how many" (no colon) computes
    assert locate_first_error(p, ["She checks 5 * 13 = 65 cookies.", *right[1:]], "66").index is None
    computes = [right[0], "To check how many are left, 65 - 15 = 62.", "With 16 more, she has 62 + 16 = 78 cookies."]
    v = locate_first_error(p, computes, "78")
    assert (v.index, v.reason) == (2, "arithmetic_error")


# ----------------------------------------------------------------------------------------------- arith


def eqs(text: str) -> list[tuple[str, str, bool | None]]:
    return [(e.lhs.strip(), e.rhs.strip(), e.ok) for e in find_equations(text)]


def test_equation_continued_on_the_next_line_is_one_claim():
    assert eqs("\\[\n9 \\times 60\n= 560\n\\]") == [("9 \\times 60", "560", False)]
    assert eqs("\\[ \\text{Total} = 9 \\times 60 \\]\n\\[ = 540 \\]") == [("9 \\times 60", "540", True)]
    assert eqs("3 + 4 =\n7 apples") == [("3 + 4", "7", True)]
    assert eqs("He has 3 apples.\n= 5 is odd") == [] and eqs("16 - 3\n4 = 4") == []  # words or no '=' at the seam


def test_aligned_latex_is_checked():
    text = "\\begin{aligned}\n3 \\times 3 &= 9 \\\\\n9 \\times 60 &= 560\n\\end{aligned}"
    assert eqs(text) == [("3 \\times 3", "9", True), ("9 \\times 60", "560", False)]


# ----------------------------------------------------------------------------------------------- case file

FREETEXT = Path(__file__).parent / "data" / "locate_freetext.jsonl"


def test_freetext_case_file_through_the_bench(data_dir, tmp_path):
    """`tests/data/locate_freetext.jsonl`: 43 hand-written solutions to GSM8K test problems 1-30 in the style of
    stronger models (28 correct, one of them on an uncheckable problem; 15 with one clear error each). Written
    after the locator's rules; the one bug they showed (an answer inside `\\( \\)` read as an aside) is fixed.
    Every checked correct one must pass and every erroneous one be located (measured: 27/27, 15/15)."""
    out = tmp_path / "bench"
    assert main(["locate-bench", str(FREETEXT), "--reference", str(data_dir / "gsm8k" / "test.jsonl"),
                 "--out", str(out)]) == 0  # fmt: skip
    checked = json.loads((out / "summary.json").read_text())["checked"]
    assert (checked["correct"], checked["erroneous"]) == (27, 15)
    assert checked["false_alarms"] == 0 and checked["accuracy_correct"] == 1.0
    assert checked["accuracy_erroneous"] == 1.0
