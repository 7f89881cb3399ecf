"""xmlformat: parsing untrusted model XML (never raises, linear time) and rendering round-trips."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workcount import assert_linear

from supercorrect import xmlformat
from supercorrect.xmlformat import (
    Parsed,
    parse,
    prefix_before_step,
    render_correction,
    render_solution,
    render_step_correction,
    step_texts,
)

FUZZ = settings(
    max_examples=int(os.environ.get("SC_FUZZ_EXAMPLES", "200")),
    deadline=None,  # no clock in unit tests: the work bound is counted below
    suppress_health_check=[HealthCheck.too_slow],
)

GOOD = """<Step1>
Natalia sold 48 clips in April. In May she sold half as many: 48 / 2 = 24.
<Key>"Half as many" means divide April's count by 2, not subtract 2.</Key>
</Step1>
<Step2>
Altogether she sold 48 + 24 = 72 clips.
</Step2>
<Generalized>Find each month's amount from the relation given, then add the amounts.</Generalized>
<Answer>72</Answer>"""

TRACE = """<Step1>
48 / 2 = 24 clips in May.
<Evaluate>This step is correct.</Evaluate>
</Step1>
<Step2>
48 + 24 = 82 clips.
<Cause>The addition is wrong: 48 + 24 is 72, not 82.</Cause>
<Correction>Altogether she sold 48 + 24 = 72 clips.</Correction>
</Step2>
<Answer>72</Answer>"""


# -- examples -------------------------------------------------------------------------------------------------


def test_good_solution():
    p = parse(GOOD)
    assert p.ok and p.issues == []
    assert [s.index for s in p.steps] == [1, 2]
    assert p.steps[0].body == "Natalia sold 48 clips in April. In May she sold half as many: 48 / 2 = 24."
    assert p.steps[0].key.startswith('"Half as many"')
    assert p.steps[1].key is None
    assert p.generalized.startswith("Find each month")
    assert p.answer == "72"
    assert p.first_error is None
    assert GOOD[p.steps[1].start :].startswith("<Step2>")
    assert GOOD[: p.steps[1].end].endswith("</Step2>")


def test_correction_trace():
    p = parse(TRACE)
    assert p.ok
    assert p.first_error == 2
    assert p.steps[0].evaluate == "This step is correct."
    assert p.steps[1].cause.startswith("The addition is wrong")
    assert p.steps[1].correction == "Altogether she sold 48 + 24 = 72 clips."
    assert p.steps[1].body == "48 + 24 = 82 clips."


def test_truncated():
    text = GOOD[: GOOD.index("Altogether") + 20]
    p = parse(text)
    assert not p.ok
    assert len(p.steps) == 2 and p.steps[0].closed and not p.steps[1].closed
    assert p.steps[1].end == len(text)
    assert p.answer is None
    assert "step 2 is not closed (truncated?)" in p.issues
    assert "no <Answer> tag" in p.issues


def test_truncated_answer_is_not_trusted():
    p = parse("<Step1>2+2=4</Step1>\n<Answer>4")
    assert p.answer is None
    assert "<Answer> is not closed (truncated?)" in p.issues


def test_tagless():
    p = parse("First, 48/2 = 24. Then 48 + 24 = 72. The answer is 72.")
    assert p.steps == [] and p.answer is None and not p.ok
    assert {"no <StepN> tags", "no <Answer> tag", "text outside tags ignored"} <= set(p.issues)


def test_wrong_nesting_recovers_steps():
    p = parse("<Step1>\nfirst\n<Step2>\nsecond\n</Step2>\n</Step1>\n<Answer>3</Answer>")
    assert step_texts(p) == ["first", "second"]
    assert not p.steps[0].closed and p.steps[1].closed
    assert "<Step2> opened inside step 1 (missing </Step1>)" in p.issues
    assert any("stray" in i for i in p.issues)
    assert p.answer == "3" and not p.ok


def test_duplicate_answers_use_last_complete():
    p = parse("<Step1>a</Step1><Answer>1</Answer> wait, <Answer>2</Answer><Answer>3")
    assert p.answer == "2"
    assert "2 <Answer> tags (last one used)" in p.issues


def test_numbering_and_case_and_spacing():
    p = parse("<step1>a</STEP1>\n< Step 2 >b< /Step2 >\n<Step4>c</Step4>\n<ANSWER >7</answer>")
    assert [s.index for s in p.steps] == [1, 2, 4]
    assert step_texts(p) == ["a", "b", "c"]
    assert p.answer == "7"
    assert p.issues == ["steps numbered 1, 2, 4"]


def test_cause_without_correction():
    p = parse("<Step1>x<Evaluate>This step is correct.</Evaluate></Step1><Step2><Cause>bad</Cause></Step2>"
              "<Answer>1</Answer>")  # fmt: skip
    assert p.first_error == 2
    assert "<Cause> without <Correction> in step 2" in p.issues


def test_unclosed_sub_block_and_mismatch():
    p = parse("<Step1>a<Key>tricky</Step1><Step2>b<Cause>c</Correction></Step2><Answer>1</Answer>")
    assert p.steps[0].key == "tricky" and p.steps[0].body == "a"
    assert "<Key> in step 1 is not closed" in p.issues
    assert "<Cause> closed by </Correction> in step 2" in p.issues


def test_not_tags_are_text():
    text = "<Step1>Since 3 < 4 and <<48/2=24>>24, a <b> tag <Steps> stays.</Step1><Answer>24</Answer>"
    p = parse(text)
    assert p.ok
    assert p.steps[0].body == "Since 3 < 4 and <<48/2=24>>24, a <b> tag <Steps> stays."


def test_text_outside_tags():
    p = parse("Sure! Here is the solution.\n<Step1>a</Step1><Answer>1</Answer>")
    assert p.issues == ["text outside tags ignored"] and p.answer == "1"


def test_step_without_number():
    p = parse("<Step>a</Step><Step>b</Step><Answer>1</Answer>")
    assert [s.index for s in p.steps] == [1, 2]
    assert any("without a number" in i for i in p.issues)


@pytest.mark.parametrize("bad", [None, 3, b"<Step1>", ["<Step1>"]])
def test_non_string(bad):
    p = parse(bad)
    assert isinstance(p, Parsed) and not p.ok and "not a string" in p.issues[0]
    assert prefix_before_step(bad, 1) is None


def test_prefix_before_step():
    assert prefix_before_step(GOOD, 1) == ""
    assert prefix_before_step(GOOD, 2) == GOOD[: GOOD.index("<Step2>")]
    assert prefix_before_step(GOOD, 3) is None
    assert prefix_before_step(GOOD, 0) is None


def test_render_solution_format():
    out = render_solution(["a", "b"], "5", generalized="g", keys={1: "k"})
    assert (
        out
        == "<Step1>\na\n<Key>k</Key>\n</Step1>\n<Step2>\nb\n</Step2>\n<Generalized>g</Generalized>\n<Answer>5</Answer>"
    )


def test_render_correction_format():
    assert (
        render_step_correction(3, "c", "x")
        == "<Step3>\n<Cause>c</Cause>\n<Correction>x</Correction>\n</Step3>"
    )
    out = render_correction(["a", "b", "c"], 2, "why", "fix", "9")
    assert out == (
        "<Step1>\na\n<Evaluate>This step is correct.</Evaluate>\n</Step1>\n"
        "<Step2>\n<Cause>why</Cause>\n<Correction>fix</Correction>\n</Step2>\n<Answer>9</Answer>"
    )
    assert parse(render_correction(["a", "b"], None, None, None, "1")).first_error is None
    with pytest.raises(ValueError):
        render_correction(["a"], 2, "c", "x", "1")
    with pytest.raises(ValueError):
        render_correction(["a"], 1, None, "x", "1")


ADVERSARIAL = {  # texts of about k "units"; k = 20_000 gives the sizes the old timed test used
    "open steps": lambda k: "<Step1>" * k,
    "close steps": lambda k: "</Step1>" * k,
    "angles": lambda k: "<" * (5 * k),
    "angle space": lambda k: "< " * (5 * k // 2),
    "spaced close": lambda k: "<   /   " * (3 * k // 4),
    "step key": lambda k: "<Step1><Key>" * (k // 2),
    "answers": lambda k: "<Answer>" * (3 * k // 4),
    "long step number": lambda k: "<Step" + "9" * (5 * k) + ">",
    "one long step": lambda k: "<Step1>" + "a" * (5 * k),
    "many steps": lambda k: "".join(f"<Step{i}>x" for i in range(3 * k // 4)),
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_inputs_are_linear(name):
    # counted steps inside xmlformat.py (tests/workcount.py), not seconds; benchmarks/parser_speed.py times them
    def both(text: str) -> None:
        p = parse(text)
        prefix_before_step(text, 2)
        assert not p.ok
        assert len(p.issues) <= 21  # capped

    assert_linear(ADVERSARIAL[name], both, 1000, modules=(xmlformat,))


# -- properties -----------------------------------------------------------------------------------------------

FRAGMENTS = [
    "<Step1>", "</Step1>", "<Step2>", "</Step2>", "<step3>", "</STEP3>", "<Step>", "</Step>", "< Step 1 >",
    "<Key>", "</Key>", "<Evaluate>", "</Evaluate>", "<Cause>", "</Cause>", "<Correction>", "</Correction>",
    "<Generalized>", "</Generalized>", "<Answer>", "</Answer>", "< /Answer >", "<", ">", "/", " ", "\n",
    "Step", "1", "a", "48/2=24", "<<", ">>",
]  # fmt: skip
tag_soup = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=60).map("".join)


def check_invariants(text: str, p: Parsed) -> None:
    assert isinstance(p, Parsed)
    assert all(isinstance(i, str) for i in p.issues)
    if p.ok:
        assert p.steps and p.answer is not None
    if p.first_error is not None:
        assert 1 <= p.first_error <= len(p.steps)
    prev = 0
    for s in p.steps:
        assert prev <= s.start < s.end <= len(text)
        assert text[s.start] == "<"
        if s.closed:
            assert text[s.end - 1] == ">"
        prev = s.end
    for pos in range(1, len(p.steps) + 1):
        assert prefix_before_step(text, pos) == text[: p.steps[pos - 1].start]


@FUZZ
@given(st.text(max_size=300))
def test_parse_never_raises_on_text(text):
    check_invariants(text, parse(text))


@FUZZ
@given(tag_soup)
def test_parse_never_raises_on_tag_soup(text):
    check_invariants(text, parse(text))


plain = st.text(st.characters(blacklist_characters="<", blacklist_categories=("Cs",)), max_size=40).map(
    str.strip
)


@FUZZ
@given(
    steps=st.lists(plain, min_size=1, max_size=8),
    answer=plain,
    generalized=st.none() | plain,
    data=st.data(),
)
def test_render_solution_round_trip(steps, answer, generalized, data):
    keys = data.draw(st.dictionaries(st.integers(1, len(steps)), plain, max_size=len(steps)))
    text = render_solution(steps, answer, generalized, keys)
    p = parse(text)
    assert p.ok, p.issues
    assert step_texts(p) == steps
    assert [s.key for s in p.steps] == [keys.get(i) for i in range(1, len(steps) + 1)]
    assert p.generalized == generalized and p.answer == answer
    for k in range(1, len(steps) + 1):
        assert prefix_before_step(text, k) == text[: text.index(f"<Step{k}>")]


@FUZZ
@given(
    steps=st.lists(plain, min_size=1, max_size=8), cause=plain, correction=plain, answer=plain, data=st.data()
)
def test_render_correction_round_trip(steps, cause, correction, answer, data):
    error_index = data.draw(st.none() | st.integers(1, len(steps)))
    p = parse(render_correction(steps, error_index, cause, correction, answer))
    assert p.ok, p.issues
    assert p.first_error == error_index
    assert p.answer == answer
    n_ok = len(steps) if error_index is None else error_index - 1
    assert step_texts(p)[:n_ok] == steps[:n_ok]
    assert all(s.evaluate == "This step is correct." for s in p.steps[:n_ok])
    if error_index is not None:
        assert len(p.steps) == error_index
        assert (p.steps[-1].cause, p.steps[-1].correction) == (cause, correction)
