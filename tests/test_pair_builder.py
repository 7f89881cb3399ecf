"""Fuzzing the Cross-DPO pair builder and the prefix cut on adversarial student solutions and teacher traces.

For any text: no exception, linear work (counted, not timed: tests/workcount.py); and whenever a pair is built,
its prompt is the chat prefix plus the student's text exactly as written up to step k, chosen is one `<Step{k}>`
block, and neither completion holds an end-of-sequence marker. `SC_FUZZ_EXAMPLES` sets the number of examples (`pytest --long`: 5000).

The grader's bound on adversarial LaTeX (towers of powers, 5000 nested braces, a million-digit number) is
proved in tests/test_grading.py (`test_adversarial_inputs_are_bounded`, `test_grader_recovers_after_timeouts`).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from workcount import assert_linear

from supercorrect import pair_builder, xmlformat
from supercorrect.pair_builder import COMMON_SPECIAL_TOKENS, build_pair, step_block

FUZZ = settings(
    max_examples=int(os.environ.get("SC_FUZZ_EXAMPLES", "200")),
    deadline=None,  # no clock in unit tests: test_hostile_sizes_are_linear counts the work instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CHAT_PREFIX = "<|im_start|>user\nSolve it.<|im_end|>\n<|im_start|>assistant\n"

TAGS = [
    "<Step1>", "</Step1>", "<Step2>", "</Step2>", "<Step3>", "</Step3>", "<step2>", "</STEP2>", "<Step>", "</Step>",
    "< Step 2 >", "<Step02>", "<Step999999999>", "<Key>", "</Key>", "<Evaluate>", "</Evaluate>", "<Cause>",
    "</Cause>", "<Correction>", "</Correction>", "<Generalized>", "</Generalized>", "<Answer>", "</Answer>",
    "This step is correct.", "<", ">", "</", "<<48/2=24>>", "\n", " ", "\\boxed{", "}", "2 + 2 = 5", "\x00",
    "\u202e", "é", "😀", "\r\n",
]  # fmt: skip
FRAGMENTS = TAGS + list(COMMON_SPECIAL_TOKENS)
soup = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=80).map("".join)
texts = soup | st.text(max_size=300)


@st.composite
def solution(draw: st.DrawFn) -> str:
    """A student solution: well-formed steps with adversarial bodies, or tag soup."""
    if draw(st.booleans()):
        return draw(texts)
    bodies = draw(st.lists(texts, min_size=1, max_size=6))
    return draw(st.sampled_from(["", "Let me think.\n", " \n"])) + "\n".join(
        f"<Step{i}>{b}</Step{i}>" for i, b in enumerate(bodies, 1)
    ) + draw(st.sampled_from(["", "<Answer>5</Answer>", "<Answer>5"]))


@st.composite
def trace(draw: st.DrawFn) -> str:
    """A teacher correction trace: some steps evaluated correct, one with adversarial Cause/Correction, or soup."""
    if draw(st.integers(0, 3)) == 0:
        return draw(texts)
    k = draw(st.integers(1, 5))
    parts = [f"<Step{i}>ok<Evaluate>This step is correct.</Evaluate></Step{i}>" for i in range(1, k)]
    cause, correction = draw(texts), draw(texts)
    close = draw(st.sampled_from([f"</Step{k}>", "", "</Step9>"]))
    parts.append(f"<Step{k}>bad<Cause>{cause}</Cause><Correction>{correction}</Correction>{close}")
    return "\n".join(parts) + draw(st.sampled_from(["<Answer>4</Answer>", "", "<Answer>"]))


@FUZZ
@given(solution(), trace(), texts)
@example(
    "<Step1>1 + 1 = 2</Step1><Step2>2 + 2 = 5</Step2>",
    "<Step1>x<Evaluate>This step is correct.</Evaluate></Step1><Step2>y<Cause>c</Cause><Correction>2 + 2 = 4"
    "</Correction></Step2><Answer>4</Answer>",
    "2 + 2 = 5 is right.",
)
@example("<Step1>a</Step1><Step2>b", "<Step2>x<Cause>c</Cause><Correction>d</Correction></Step2>", "<|im_end|>")
@example("<Step1>a</Step1><Step2>b</Step2>", "<Step1>x</Step1><Step2><Cause>c<|im_end|></Cause><Correction>d"
         "</Correction></Step2>", "mine")  # fmt: skip
def test_build_pair_properties(student: str, teacher: str, own_step: str) -> None:
    pair, why = build_pair("p", CHAT_PREFIX, student, teacher, own_step)
    assert (pair is None) != (why is None)
    if pair is None:
        assert why in {"teacher_found_no_error", "teacher_step_incomplete", "step_not_in_student_solution",
                       "chosen_equals_rejected", "special_token_in_text"}  # fmt: skip
        return
    k = pair.step
    assert k == xmlformat.parse(teacher).first_error
    # the prompt is the chat prefix and the student's own text, byte for byte, up to its step k
    assert pair.prompt.startswith(CHAT_PREFIX)
    prefix = pair.prompt[len(CHAT_PREFIX) :]
    assert student.startswith(prefix)
    n = len(xmlformat.parse(student).steps)
    if k <= n:
        assert prefix == xmlformat.prefix_before_step(student, k)
        assert xmlformat._TAG.match(student, len(prefix)), "the prefix ends right before a step's opening tag"
    else:  # a missing step after the last one: the prefix holds every step (correct.missing_step own_k)
        assert k == n + 1 and len(xmlformat.parse(prefix).steps) == n
        assert not student[len(prefix) :][:1].isspace(), "the prefix takes the whitespace after the last step"
    # chosen and rejected are one step each, and end no turn
    assert pair.chosen.startswith(f"<Step{k}>") and pair.chosen.endswith(f"</Step{k}>")
    assert pair.rejected.lower().startswith(f"<step{k}>") and pair.rejected.lower().endswith(f"</step{k}>")
    for text in (pair.chosen, pair.rejected, prefix):
        assert not any(tok in text for tok in COMMON_SPECIAL_TOKENS), text
    assert pair.chosen.strip() != pair.rejected.strip()


@FUZZ
@given(solution(), st.integers(-3, 12))
def test_prefix_before_step_properties(text: str, index: int) -> None:
    prefix = xmlformat.prefix_before_step(text, index)
    steps = xmlformat.parse(text).steps
    if not 1 <= index <= len(steps):
        assert prefix is None
        return
    assert prefix is not None and text.startswith(prefix)
    assert len(prefix) == steps[index - 1].start
    assert xmlformat._TAG.match(text, len(prefix))
    # the prefix holds exactly the steps before `index` (parsing it again finds no more, no fewer)
    assert len(xmlformat.parse(prefix).steps) == index - 1


@FUZZ
@given(texts, st.integers(1, 12))
def test_step_block_is_one_closed_step(text: str, index: int) -> None:
    block = step_block(text, index)
    assert block.lower().startswith(f"<step{index}>") and block.lower().endswith(f"</step{index}>")


FLOODS = {  # about k "units"; k = 20_000 gives the sizes the old timed test used (up to a megabyte)
    "open steps": lambda k: "<Step1>" * k,
    "unbalanced causes": lambda k: "<Step1>" + "<Cause>" * k + "</Step1>",
    "many steps": lambda k: "".join(f"<Step{i}>x</Step{i}>" for i in range(1, k // 4 + 1)),
    "plain text": lambda k: "a" * (50 * k),
    "angles": lambda k: "<" * (10 * k),
}


@pytest.mark.parametrize("name", FLOODS)
def test_hostile_sizes_are_linear(name: str) -> None:
    """Big inputs as the student's text and as the teacher's trace: the work (steps counted in pair_builder.py
    and xmlformat.py, tests/workcount.py) grows linearly; benchmarks/parser_speed.py measures the seconds."""
    trace_text = "<Step2>x<Cause>c</Cause><Correction>d</Correction></Step2>"

    def all_three(flood: str) -> None:
        build_pair("p", CHAT_PREFIX, flood, trace_text, "mine")
        build_pair("p", CHAT_PREFIX, "<Step1>a</Step1><Step2>b</Step2>", flood, flood)
        xmlformat.prefix_before_step(flood, 4000)

    assert_linear(FLOODS[name], all_three, 1000, modules=(pair_builder, xmlformat))
