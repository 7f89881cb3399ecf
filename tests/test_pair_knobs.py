"""The Cross-DPO pair knobs (issue 12): `pairs.context`, `pairs.chosen`, `correct.missing_step`.

Hand-made correction rows, corrected by the real rule-based teacher, built into pairs by the real builder with the
embedded model's own tokenizer (no model runs), and the `correct` + `pairs` stages end to end on the tiny model."""

from __future__ import annotations

import difflib
import json
import re
import shutil

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from supercorrect import prompts, xmlformat
from supercorrect.config import PairsConfig, load_config
from supercorrect.errors import UserError
from supercorrect.io import read_json, read_jsonl, write_json
from supercorrect.models import chat_prompt
from supercorrect.pair_builder import build_pair, variant_id, variants
from supercorrect.schema import Problem, RefStep
from supercorrect.stages.correct import correction_context, student_turn
from supercorrect.teachers.base import CorrectionRequest
from supercorrect.teachers.reference import ReferenceTeacher, fix_result, locate_first_error

PENCILS = Problem(
    id="pencils",
    question="Mia buys 4 packs of 12 pencils. She splits them equally into 2 bags and keeps one. She gives 5 "
    "away. How many pencils does she have?",
    solution="",
    answer="19",
    steps=[
        RefStep(text="Mia has 4 * 12 = 48 pencils.", expr="4 * 12", value="48"),
        RefStep(text="One bag holds 48 / 2 = 24 pencils.", expr="48 / 2", value="24"),
        RefStep(text="After giving 5 away she has 24 - 5 = 19 pencils.", expr="24 - 5", value="19"),
    ],
    source="synthetic",
)
GEN = "<Generalized>Multiply, divide, then subtract.</Generalized>"
ARITH = (  # step 2 miscomputes 48 / 2 and carries the wrong 25 on
    "<Step1>\nMia has 4 * 12 = 48 pencils.\n</Step1>\n"
    "<Step2>\nEach bag gets 48 / 2 = 25 pencils, so she keeps 25.\n</Step2>\n"
    f"<Step3>\nShe has 25 - 5 = 20 left.\n</Step3>\n{GEN}\n<Answer>20</Answer>"
)
STOPS = (  # every step right, but the subtraction is missing: the answer is 24
    "<Step1>\nMia has 4 * 12 = 48 pencils.\n</Step1>\n"
    f"<Step2>\nOne bag holds 48 / 2 = 24 pencils.\n</Step2>\n{GEN}\n<Answer>24</Answer>"
)
JUMPS = (  # every step right, then a step that only restates 24 where the subtraction belongs
    "<Step1>\nMia has 4 * 12 = 48 pencils.\n</Step1>\n<Step2>\nOne bag holds 48 / 2 = 24 pencils.\n</Step2>\n"
    "<Step3>\nSo she has 24 pencils.\n</Step3>\n<Answer>24</Answer>"
)
OWN = "<Step{k}>\n<Cause>I think this step is fine.</Cause>\n<Correction>Keep it.</Correction>\n</Step{k}>"


@pytest.fixture(scope="module")
def tok(embedded_dir):
    from supercorrect.models import load_tokenizer

    return load_tokenizer(str(embedded_dir))


def correction_row(text: str, missing_step: str = "own_k") -> dict:
    """A corrections.jsonl row as stage `correct` writes it (the student's own analysis is hand-written)."""
    steps = xmlformat.step_texts(xmlformat.parse(text))
    out = ReferenceTeacher(mark_text=False, missing_step=missing_step).correction(
        CorrectionRequest(PENCILS, text, steps)
    )
    k = xmlformat.parse(out.text).first_error
    return {"key": f"{PENCILS.id}#0", "id": PENCILS.id, "student_solution": text, "student_steps": steps,
            "teacher_trace": out.text, "k": k, "locator_reason": out.reason, "teacher_step_fix": out.step_fix,
            "teacher_answer_correct": True, "student_step_k": OWN.format(k=k)}  # fmt: skip


def pair_of(tok, row: dict, context: str, form: str):
    head = chat_prompt(tok, prompts.render("ht", problem=PENCILS.question))
    return build_pair(
        variant_id(row["key"], context, form), head, row["student_solution"], row["teacher_trace"],
        row["student_step_k"], special_tokens=[t for t in tok.all_special_tokens if t], context=context,
        chosen_form=form, step_fix=row["teacher_step_fix"],
        correction_context=lambda k: correction_context(tok, PENCILS.question, row["student_steps"], k),
    )  # fmt: skip


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """The (a, b) runs of words where two texts differ."""
    wa, wb = re.findall(r"\S+|\s+", a), re.findall(r"\S+|\s+", b)
    ops = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes()
    return [("".join(wa[i1:i2]), "".join(wb[j1:j2])) for tag, i1, i2, j1, j2 in ops if tag != "equal"]


# ----------------------------------------------------------------------------------------------- contexts x chosen


def test_ht_cause_correction_is_todays_pair(tok):
    row = correction_row(ARITH)
    assert (row["k"], row["locator_reason"]) == (2, "arithmetic_error")
    pair, why = pair_of(tok, row, "ht", "cause_correction")
    assert why is None and pair.id == row["key"] and (pair.context, pair.chosen_form) == ("ht", "cause_correction")
    head = chat_prompt(tok, prompts.render("ht", problem=PENCILS.question))
    assert pair.prompt == head + ARITH[: ARITH.index("<Step2>")]
    assert pair.chosen == (
        "<Step2>\n<Cause>Step 2 computes 48 / 2 as 25, but 48 / 2 = 24.</Cause>\n"
        "<Correction>One bag holds 48 / 2 = 24 pencils.</Correction>\n</Step2>"
    )
    assert pair.rejected == row["student_step_k"]
    # the call without the new keywords builds the very same pair (the paper's, as before the knobs)
    old, _ = build_pair(row["key"], head, ARITH, row["teacher_trace"], row["student_step_k"])
    assert old == pair


def test_student_form_differs_only_in_the_corrected_number(tok):
    row = correction_row(ARITH)
    assert row["teacher_step_fix"] == "<Step2>\nEach bag gets 48 / 2 = 24 pencils, so she keeps 24.\n</Step2>"
    pair, why = pair_of(tok, row, "ht", "student_form")
    assert why is None and pair.id == "pencils#0@student_form"
    head = chat_prompt(tok, prompts.render("ht", problem=PENCILS.question))
    # rejected: the student's original step 2 (not its self-analysis), a real continuation of the prompt
    assert pair.rejected == "<Step2>\nEach bag gets 48 / 2 = 25 pencils, so she keeps 25.\n</Step2>"
    assert (head + ARITH).startswith(pair.prompt + pair.rejected)
    assert pair.chosen == row["teacher_step_fix"]
    assert word_diff(pair.rejected, pair.chosen) == [("25", "24"), ("25.", "24.")]


def test_correction_context_is_the_self_correction_turn(tok):
    row = correction_row(ARITH)
    cc, why = pair_of(tok, row, "correction", "cause_correction")
    assert why is None and cc.id == "pencils#0@correction"
    turn = student_turn(tok, PENCILS.question, row["student_steps"], 2)
    assert cc.prompt + "<Step2>\n" == turn  # the student's own analysis was generated from exactly this
    assert cc.prompt.startswith(chat_prompt(tok, prompts.render(
        "correction_plain", problem=PENCILS.question, steps="Step 1: Mia has 4 * 12 = 48 pencils.\n"
        "Step 2: Each bag gets 48 / 2 = 25 pencils, so she keeps 25.\nStep 3: She has 25 - 5 = 20 left.")))  # fmt: skip
    assert cc.prompt.endswith(
        "<Step1>\nMia has 4 * 12 = 48 pencils.\n<Evaluate>This step is correct.</Evaluate>\n</Step1>\n"
    )
    ht, _ = pair_of(tok, row, "ht", "cause_correction")
    assert (cc.chosen, cc.rejected) == (ht.chosen, ht.rejected)  # what the student should write there
    sf, why = pair_of(tok, row, "correction", "student_form")
    assert why is None and sf.id == "pencils#0@correction+student_form" and sf.prompt == cc.prompt
    assert word_diff(sf.rejected, sf.chosen) == [("25", "24"), ("25.", "24.")]


def test_both_doubles_the_pairs_with_distinct_ids(tok):
    assert variants("ht", "cause_correction") == [("ht", "cause_correction")]
    assert len(variants("both", "cause_correction")) == len(variants("ht", "both")) == 2
    row = correction_row(ARITH)
    built = [pair_of(tok, row, c, f)[0] for c, f in variants("both", "both")]
    assert len(built) == 4 and all(built) and len({p.id for p in built}) == 4
    assert len({p.prompt for p in built}) == 2 and len({p.chosen for p in built}) == 2


def test_llm_teacher_student_form_uses_the_correction_as_is(tok):
    row = {**correction_row(ARITH), "teacher_step_fix": None}
    pair, _ = pair_of(tok, row, "ht", "student_form")
    assert pair.chosen == "<Step2>\nOne bag holds 48 / 2 = 24 pencils.\n</Step2>"


def test_dropped_variants_say_why(tok):
    row = correction_row(ARITH)
    same = {**row, "teacher_step_fix": "<Step2>\nEach bag gets 48 / 2 = 25 pencils, so she keeps 25.\n</Step2>"}
    assert pair_of(tok, same, "ht", "student_form") == (None, "chosen_equals_rejected")
    assert pair_of(tok, same, "ht", "cause_correction")[0] is not None  # the other variant is still built
    cut = STOPS.split(GEN)[0]  # truncated right after its last step: nothing written where the step is missing
    row = correction_row(cut)
    assert row["k"] == 3 and pair_of(tok, row, "ht", "student_form") == (None, "nothing_written_at_step")


# ----------------------------------------------------------------------------------------------- missing step


def test_missing_step_located_at_its_own_k():
    steps = ["Mia has 4 * 12 = 48 pencils.", "One bag holds 48 / 2 = 24 pencils."]
    own = locate_first_error(PENCILS, steps, "24", "own_k")
    assert (own.index, own.reason, own.kind) == (3, "missing_step", "final_answer")
    assert own.correction.startswith("After giving 5 away she has 24 - 5 = 19")
    last = locate_first_error(PENCILS, steps, "24", "last_step")
    assert (last.index, last.reason) == (2, "final_answer_only")
    jumps = locate_first_error(PENCILS, [*steps, "So she has 24 pencils."], "24", "own_k")
    assert (jumps.index, jumps.reason) == (3, "missing_step")
    assert locate_first_error(PENCILS, [*steps, "So she has 24 pencils."], "24", "last_step").index == 3
    # every reference value reached but a wrong answer: not a missing step, the last step as before
    done = [*steps, "24 - 5 = 19 pencils."]
    assert locate_first_error(PENCILS, done, "20", "own_k").reason == "final_answer_only"


def test_missing_step_pairs(tok):
    row = correction_row(STOPS)
    assert (row["k"], row["locator_reason"]) == (3, "missing_step")
    trace = xmlformat.parse(row["teacher_trace"])
    assert [s.evaluate is not None for s in trace.steps] == [True, True, False]  # steps 1-2 right, 3 missing
    head = chat_prompt(tok, prompts.render("ht", problem=PENCILS.question))
    cc, _ = pair_of(tok, row, "ht", "cause_correction")
    assert cc.prompt == head + STOPS[: STOPS.index("<Generalized>")]  # all the student's steps, then the gap
    assert cc.chosen.startswith("<Step3>\n<Cause>") and "24 - 5 = 19" in cc.chosen
    sf, _ = pair_of(tok, row, "ht", "student_form")
    assert sf.chosen == "<Step3>\nAfter giving 5 away she has 24 - 5 = 19 pencils. The answer is 19.\n</Step3>"
    assert sf.rejected == GEN  # what the student wrote where the step belongs, verbatim
    assert (head + STOPS).startswith(sf.prompt + sf.rejected)
    ctx, _ = pair_of(tok, row, "correction", "cause_correction")
    assert ctx.prompt.endswith("24 pencils.\n<Evaluate>This step is correct.</Evaluate>\n</Step2>\n")
    # last_step: the old pair replaces the correct step 2 by the subtraction (teaches skipping a step)
    old = correction_row(STOPS, "last_step")
    assert (old["k"], old["locator_reason"]) == (2, "final_answer_only")
    pair, _ = pair_of(tok, old, "ht", "student_form")
    assert pair.rejected == "<Step2>\nOne bag holds 48 / 2 = 24 pencils.\n</Step2>" and "24 - 5" in pair.chosen
    # the student that jumps to its answer: the restating step is rejected, the subtraction chosen
    jump, _ = pair_of(tok, correction_row(JUMPS), "ht", "student_form")
    assert (jump.step, jump.rejected) == (3, "<Step3>\nSo she has 24 pencils.\n</Step3>")


# ----------------------------------------------------------------------------------------------- the rule-based fix


def test_fix_result_keeps_the_students_words():
    assert fix_result("Half: $48 / 2 = $25.00 each", ("48 / 2", "25.00", "24.00")) == "Half: $48 / 2 = $24.00 each"
    assert fix_result("12 * 5 = 75, so 75 pens; 175 in all", ("12 * 5", "75", "60")) == "12 * 5 = 60, so 60 pens; 175 in all"
    # the wrong result used in a later equation of the step: replacing it leaves a false one, so no fix
    assert fix_result("48 / 2 = 25, then 25 - 5 = 20", ("48 / 2", "25", "24")) is None
    assert fix_result("no such equation", ("48 / 2", "25", "24")) is None
    big = _problem_thousands()
    v = locate_first_error(big, ["He earns 1,200 + 50 = 1,300 dollars."], "1,300")
    assert v.reason == "arithmetic_error" and v.fix == ("1,200 + 50", "1,300", "1,250")


def _problem_thousands() -> Problem:
    return Problem(id="b", question="He earns 1200 dollars and a 50 dollar bonus. How much in all?", solution="",
                   answer="1250", steps=[RefStep(text="1200 + 50 = 1250", expr="1200 + 50", value="1250")],
                   source="synthetic")  # fmt: skip


def test_no_fix_when_the_right_value_is_off_the_reference_route():
    """A cause can misname the error: '12 * 5 = 75' where the operand 5 is wrong (6 * 12 = 72): making the
    equation true (60) would not correct the step, so student_form falls back to the reference step."""
    p = Problem(id="m", question="A box has 6 rows of 12 eggs. How many eggs?", solution="", answer="72",
                steps=[RefStep(text="6 * 12 = 72 eggs", expr="6 * 12", value="72")], source="synthetic")  # fmt: skip
    v = locate_first_error(p, ["There are 12 * 5 = 75 eggs."], "75")
    assert v.reason == "arithmetic_error" and v.fix is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["<Step1>", "</Step1>", "<Step2>", "</Step2>", "<Answer>", "</Answer>", "x = 2",
                                 "<Generalized>", "</Generalized>", " ", "\n", "a"]), max_size=30).map("".join),
       st.integers(-1, 5))  # fmt: skip
def test_split_at_step_properties(text, index):
    got = xmlformat.split_at_step(text, index)
    n = len(xmlformat.parse(text).steps)
    if not (1 <= index <= n or (n and index == n + 1)):
        assert got is None
        return
    prefix, written = got
    assert text.startswith(prefix + written)
    if index <= n:
        assert prefix == xmlformat.prefix_before_step(text, index)
        assert len(xmlformat.parse(prefix + written).steps) == index
    else:
        assert len(xmlformat.parse(prefix).steps) == n and not text[len(prefix) :][:1].isspace()


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("pairs", {"context": "prompt"}, "pairs.context: Input should be 'ht', 'correction' or 'both' (got 'prompt')"),
        ("pairs", {"chosen": "tags"},
         "pairs.chosen: Input should be 'cause_correction', 'student_form' or 'both' (got 'tags')"),
        ("pairs", {"contexts": "ht"}, "pairs.contexts: unknown key"),
        ("correct", {"missing_step": "first"}, "correct.missing_step: Input should be 'own_k' or 'last_step'"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_errors(tmp_path, key, value, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "data": {}, key: value}))
    with pytest.raises(UserError) as e:
        load_config(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_defaults_and_fingerprint(tmp_path):
    from supercorrect.stages import pairs as pairs_stage

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "data": {}}))
    cfg = load_config(path)
    assert cfg.pairs == PairsConfig(context="ht", chosen="cause_correction")
    assert cfg.correct.missing_step == "own_k"
    # the paper's pairs (the defaults) hash as before the section existed: finished runs are not redone
    assert pairs_stage.stage(cfg).sections == ()
    other = load_config(path, {"pairs.context": "both"})
    assert pairs_stage.stage(other).sections == ("pairs",)
    assert other.section_hash("seed", "pairs") != cfg.section_hash("seed")


# ----------------------------------------------------------------------------------------------- the stages


def test_correct_and_pairs_stages_tiny(tmp_path, tiny_model_dir):
    """Stage `correct` (the reference teacher, the tiny student writing its analysis) and stage `pairs` with
    every variant, on planted solutions: an arithmetic error and a missing last step."""
    from supercorrect.pipeline import run_pipeline

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "name": "tiny", "run_root": str(tmp_path / "runs"), "student": {"model": str(tiny_model_dir)},
        "generation": {"batch_size": 4}, "correct": {"student_max_new_tokens": 8},
        "data": {"train": {"kind": "synthetic", "split": "train", "n": 4, "max_steps": 3}},
        "pairs": {"context": "both", "chosen": "both"},
    }))  # fmt: skip
    cfg = load_config(cfg_file)
    from supercorrect.data import load_problems

    run = cfg.run_dir
    shutil.copytree(tiny_model_dir, run / "hsft" / "model")
    wrong = []
    for p in load_problems(cfg.data["train"], cfg.base_dir):
        if len(p.steps) < 2:
            continue
        steps = [f"{s.expr} = {s.value}" for s in p.steps]
        planted = {"arith": steps[:1] + [steps[1].split("=")[0] + "= 999"] + steps[2:], "stops": steps[:-1]}
        for tag, shown in planted.items():
            text = xmlformat.render_solution(shown, "999" if tag == "arith" else p.steps[-2].value or "0")
            wrong.append({"id": p.id, "sample": 0, "text": text, "correct": False, "key": f"{p.id}#{tag}"})
    assert wrong
    (run / "sample").mkdir(parents=True)
    (run / "sample" / "wrong.jsonl").write_text("".join(json.dumps(w) + "\n" for w in wrong))
    write_json(run / "sample" / "manifest.json", {"fingerprint": "planted"})
    run_pipeline(cfg, only=["correct", "pairs"])
    rows = {r["key"]: r for r in read_jsonl(run / "correct" / "corrections.jsonl")}
    for key, r in rows.items():
        n = len(r["student_steps"])
        if key.endswith("#stops"):
            assert (r["k"], r["locator_reason"]) == (n + 1, "missing_step"), r
        else:
            assert r["locator_reason"] == "arithmetic_error" and r["teacher_step_fix"], r
        assert r["student_step_k"].startswith(f"<Step{r['k']}>")
    pairs = read_jsonl(run / "pairs" / "pairs.jsonl")
    counts = read_json(run / "pairs" / "manifest.json")["counts"]
    assert len(pairs) == counts["pairs"] and len({p["id"] for p in pairs}) == len(pairs)
    assert set(counts["by_variant"]) == {"ht/cause_correction", "ht/student_form", "correction/cause_correction",
                                         "correction/student_form"}  # fmt: skip
    assert counts["pairs"] + sum(counts["dropped_by_reason"].values()) == 4 * len(rows)
    assert {p["key"] for p in pairs} == set(rows)
    for p in pairs:
        if p["chosen_form"] == "student_form" and p["key"].endswith("#arith"):
            assert [b for _, b in word_diff(p["rejected"], p["chosen"])] == [rows[p["key"]]["teacher_step_fix"]
                                                                           .split("= ")[1].split("\n")[0]]
    # last_step: the missing step is blamed on the last written step again (the correct stage redoes)
    run_pipeline(load_config(cfg_file, {"correct.missing_step": "last_step"}), only=["correct"])
    rows = read_jsonl(run / "correct" / "corrections.jsonl")
    assert all(r["k"] == len(r["student_steps"]) for r in rows if r["key"].endswith("#stops"))


def test_locate_bench_reads_a_missing_step_row(tmp_path):
    """A run's corrections.jsonl with a missing step (k = len(steps) + 1) is a bench item labelled one past its
    last step, and the reference teacher (own_k) predicts that very index."""
    from supercorrect.locate_bench import _from_trace, load_items

    row = correction_row(STOPS)
    (tmp_path / "corrections.jsonl").write_text(json.dumps(row) + "\n")
    (item,) = load_items(tmp_path / "corrections.jsonl")
    assert item.steps == row["student_steps"] and item.label == 2
    out = ReferenceTeacher().correction(CorrectionRequest(PENCILS, "\n\n".join(item.steps), item.steps))
    assert _from_trace(out.text, 2, missing_ok=True) == (2, None)
    assert _from_trace(out.text, 2) == (-1, "flagged step 3 of 2")  # a critic's extra step is not judged
