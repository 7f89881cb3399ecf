"""Issue 14 recipes, LEMA and explain-based distillation: the triplet format, the mixing ratio, the equal-token
budgets, the perplexity helper, resume and redo by fingerprint, and a tiny end-to-end run of each recipe through
`supercorrect run` (tiny random model, reference teacher; the solve-based arm through an OpenAI-compatible stub)."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
import yaml
from planting import plant_wrong_solutions
from servers import _Handler, _Server, completion

from supercorrect.cli import main
from supercorrect.config import load_config
from supercorrect.data import load_problems
from supercorrect.io import read_json, read_jsonl
from supercorrect.pipeline import run_pipeline
from supercorrect.stages.lema_data import (
    fill_to_budget,
    parse_continuation,
    rule_continuation,
    triplet_completion,
    triplet_prompt,
)
from supercorrect.teachers.reference import step_text
from supercorrect.xmlformat import render_solution

# ---- formats and budgets (no model) ----------------------------------------------------------------------------


def test_triplet_completion_is_lemas_format():
    text = triplet_completion(2, "It subtracts  instead\nof adding.", ["5 + 3 = 8.", "The answer is 8."])
    assert text == (
        "Incorrect Step: Step 2.\nExplanation: It subtracts instead of adding.\nCorrect Solution:\n{\n...\n"
        "Step 2: 5 + 3 = 8.\nStep 3: The answer is 8.\n}"
    )
    # k = 1: the corrected solution starts at step 1, nothing before it to elide
    assert triplet_completion(1, "x", ["a", "b"]).endswith("Correct Solution:\n{\nStep 1: a\nStep 2: b\n}")


def test_triplet_prompt_shows_the_original_solution_as_lema_does():
    text = triplet_prompt("How many?", ["2 + 2 = 5", "5 * 2 = 10"], "10")
    assert text.startswith("For the following math word problem, the original solution may contain errors.")
    assert text.endswith(
        "Question: How many?\nOriginal Solution:\n{\nStep 1: 2 + 2 = 5\nStep 2: 5 * 2 = 10\nStep 3: The answer is 10.\n}"
    )


def test_fill_to_budget_is_at_most_the_budget_and_short_by_less_than_the_smallest_row():
    rng = random.Random(0)
    for _ in range(200):
        sizes = [rng.randint(1, 60) for _ in range(rng.randint(1, 8))]
        budget = rng.randint(0, 500)
        pool = [{"i": i} for i in range(len(sizes))]
        rows, total = fill_to_budget(pool, sizes, budget, random.Random(1))
        assert total == sum(sizes[r["i"]] for r in rows)
        assert total <= budget and budget - total < min(sizes)
    assert fill_to_budget([], [], 100, random.Random(0)) == ([], 0)


def test_rule_continuation_follows_the_reference_after_the_corrected_step():
    p = next(q for q in load_problems_synthetic(8) if len(q.steps) == 3)
    texts = [step_text(s) for s in p.steps]
    assert rule_continuation(p, texts[0]) == texts[1:]
    assert rule_continuation(p, texts[2] + f" The answer is {p.answer}.") == []
    assert rule_continuation(p, "something else entirely") is None


def test_right_steps_with_a_wrong_answer_make_the_answer_step_the_incorrect_one():
    """The reference teacher names the last step when every step is right but the answer is not; in LEMA's
    numbering the answer is a step of its own, so the triplet points at it and keeps every student step."""
    from supercorrect.stages.lema_data import answer_step_is_wrong, build_triplet
    from supercorrect.teachers import CorrectionRequest
    from supercorrect.teachers.reference import ReferenceTeacher
    from supercorrect.xmlformat import parse

    p = next(q for q in load_problems_synthetic(8) if len(q.steps) == 3)
    steps = [f"{p.steps[0].expr} = {p.steps[0].value}"]
    request = CorrectionRequest(p, render_solution(steps, "5"), steps)
    trace = ReferenceTeacher(mark_text=False, missing_step="last_step").correction(request)
    step = parse(trace.text).steps[0]
    assert parse(trace.text).first_error == 1 and answer_step_is_wrong(p, steps, "5", 1, "last_step")
    # correct.missing_step own_k (the default) names the missing step 2 instead: the same triplet (final_only)
    own = ReferenceTeacher(mark_text=False).correction(request)
    assert parse(own.text).first_error == 2 and own.reason == "missing_step"
    assert answer_step_is_wrong(p, steps, "5", 2) and parse(own.text).steps[1].correction == step.correction
    cont = rule_continuation(p, step.correction)
    t = build_triplet(p, steps, "5", 1, step.cause, step.correction, cont, "cot", final_only=True)
    assert t["k"] == 2 and t["incorrect_step"] == "The answer is 5."
    assert t["prompt"].endswith(f"Step 1: {steps[0]}\nStep 2: The answer is 5.\n}}")
    assert t["completion"].startswith("Incorrect Step: Step 2.\nExplanation: ")
    assert f"{{\n...\nStep 2: {step.correction}" in t["completion"]
    assert t["corrected"].startswith(steps[0] + "\n" + step.correction)
    assert t["corrected"].endswith(f"\\boxed{{{p.answer}}}$.") and t["wrong"].endswith("\\boxed{5}$.")
    # A wrong computation is the incorrect step itself.
    bad = [f"{p.steps[0].expr} = 999"]
    assert not answer_step_is_wrong(p, bad, "999", 1)
    t = build_triplet(p, bad, "999", 1, "c", "x", [], "cot")
    assert t["k"] == 1 and t["incorrect_step"] == bad[0] and t["corrected"].startswith("x\n")


def test_parse_continuation_keeps_step_lines_only():
    text = "Sure!\nStep 3: 4 * 2 = 8.\n  Step 4. The answer is 8.\nStep 5:\n<Answer>8</Answer>"
    assert parse_continuation(text) == ["4 * 2 = 8.", "The answer is 8."]


def load_problems_synthetic(n: int):
    from supercorrect.data.spec import DataSpec

    return load_problems(DataSpec(kind="synthetic", split="train", n=n, max_steps=3))


# ---- perplexity helper -------------------------------------------------------------------------------------------


def test_completion_nll_matches_unbatched_and_scores_only_the_completion(tiny_model_dir):
    import torch

    from supercorrect.models import load_model, load_tokenizer
    from supercorrect.scoring import completion_nll, completion_token_ids

    model, tok = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    pairs = [("Add 2 and 3.", "2 + 3 = 5"), ("A much longer question about apples and pears?", "7"),
             ("Q", "Step 1: 1 + 1 = 2\nStep 2: 2 * 3 = 6\nThe answer is 6.")]  # fmt: skip
    batched = completion_nll(model, tok, pairs, batch_size=3)
    for (p, c), got in zip(pairs, batched, strict=True):
        ids, start = completion_token_ids(tok, p, c)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits[:-1].float(), -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
        want = float(-logp[start - 1 :].mean())
        assert math.isclose(got, want, rel_tol=1e-4), (got, want)
    assert math.isnan(completion_nll(model, tok, [("Q", "")])[0])


# ---- tiny end-to-end runs --------------------------------------------------------------------------------------


def make_config(tmp_path: Path, model: Path, recipe: str, **extra) -> Path:
    cfg = {
        "name": f"tiny-{recipe}",
        "recipe": recipe,
        "run_root": str(tmp_path / "runs"),
        "student": {"model": str(model)},
        "teacher": {"kind": "reference"},
        "generation": {"batch_size": 8, "max_new_tokens": 16},
        "data": {
            "train": {"kind": "synthetic", "split": "train", "n": 12, "max_steps": 3},
            "test": {"kind": "synthetic", "split": "test", "n": 4, "max_steps": 3},
        },
        "hsft": {"epochs": 1, "batch_size": 4, "max_length": 384, "learning_rate": 1e-3, "logging_steps": 1},
        "sample": {"k": 1, "max_new_tokens": 16},
        "correct": {"student_max_new_tokens": 8},
        "evaluate": {"sets": ["test"]},
        **extra,
    }
    p = tmp_path / f"{recipe}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.slow  # four tiny SFTs and five evaluations: about 3 minutes on 2 free cores
def test_lema_recipe_tiny_end_to_end(tmp_path, tiny_model_dir, monkeypatch):
    path = make_config(tmp_path, tiny_model_dir, "lema", lema={"mix_ratio": 0.5, "heldout": 0.25})
    cfg = load_config(path)
    run_pipeline(cfg, only=["templates", "hsft", "sample"])
    problems = plant_wrong_solutions(cfg)
    assert main(["run", str(path)]) == 0
    run = cfg.run_dir

    # Triplets: one per located correction, in LEMA's format, from the student's wrong step 2.
    triplets = read_jsonl(run / "lema-data" / "triplets.jsonl")
    assert len(triplets) == 12
    by_id = {p.id: p for p in problems}
    for t in triplets:
        p = by_id[t["id"]]
        assert t["k"] == 2 and t["incorrect_step"].endswith("= 999")
        m = re.fullmatch(r"Incorrect Step: Step 2\.\nExplanation: (.+)\nCorrect Solution:\n\{\n\.\.\.\n(.+)\n\}",
                         t["completion"], re.S)  # fmt: skip
        assert m, t["completion"]
        lines = m.group(2).split("\n")
        assert [ln.split(":")[0] for ln in lines] == [f"Step {i}" for i in range(2, 2 + len(lines))]
        assert lines[-1].endswith(f"The answer is {p.answer}.") or f"The answer is {p.answer}" in lines[-1]
        assert "Original Solution:\n{\nStep 1: " in t["prompt"] and "= 999" in t["prompt"]
        assert "999" not in t["corrected"] and t["corrected"].endswith(f"\\boxed{{{p.answer}}}$.")
    # Held-out problems: a quarter, in no training set.
    held = {t["id"] for t in read_jsonl(run / "lema-data" / "heldout.jsonl")}
    assert len(held) == 3
    counts = read_json(run / "lema-data" / "manifest.json")["counts"]
    n_train = counts["triplets_train"]
    assert n_train == 9
    sets = {a: read_jsonl(run / "lema-data" / f"train_{a}.jsonl") for a in ("lema", "lema-corrected", "lema-plain")}
    for rows in sets.values():
        assert not held & {r["id"] for r in rows}
        # the mixing ratio: lema.mix_ratio solution rows per training triplet, the same base rows in every arm
        assert sum(r["kind"] == "base" for r in rows) == round(0.5 * n_train) == counts["base_rows"]
    assert sorted(json.dumps(r) for r in sets["lema"] if r["kind"] == "base") == sorted(
        json.dumps(r) for r in sets["lema-plain"] if r["kind"] == "base")  # fmt: skip
    assert all(r["completion"].startswith("Incorrect Step") for r in sets["lema"] if r["kind"] == "added")
    assert not any("Incorrect Step" in r["completion"] for r in sets["lema-corrected"] + sets["lema-plain"])
    # Equal tokens: each arm's added completion tokens <= the triplets', short by less than its shortest row.
    b = counts["budget"]
    for arm in ("lema-corrected", "lema-plain"):
        assert b["tokens"] - b["shortest_row"][arm] < b[arm] <= b["tokens"], (arm, b)
        assert counts["added_rows"][arm] >= 1
    # Three trained arms, evaluated; the sense of error measured before and after; the report has the table.
    for arm in ("lema", "lema-corrected", "lema-plain"):
        assert (run / arm / "model" / "config.json").exists()
        assert (run / f"eval-{arm}" / "manifest.json").exists()
    sense = read_json(run / "lema-sense" / "sense.json")
    assert set(sense) == {"base", "lema", "lema-corrected", "lema-plain"}
    assert sense["base"]["heldout"]["n"] == 3 and sense["base"]["train"]["n"] == 9
    assert math.isfinite(sense["lema"]["heldout"]["nll_gap"])
    report = (run / "report" / "report.md").read_text()
    assert "## LEMA: error signal or one more solution?" in report and "corrected solutions alone" in report

    # The comparison table counts the recipe that ran here completely (lema), with what it spent.
    assert main(["recipe-table", str(path)]) == 0
    rows = {r["recipe"]: r for r in read_json(run / "recipe-table" / "recipe_table.json")}
    assert set(rows) == {"lema"}
    assert set(rows["lema"]["accuracy"]) == {"lema", "lema-corrected", "lema-plain"}
    assert rows["lema"]["student_trained_tokens"] > 0 and rows["lema"]["seconds"] > 0
    assert rows["lema"]["accuracy"]["lema"]["test"]["problems"] == 4

    # Resume: a second run skips every stage but the report.
    stages = [s for s in read_json(run / "lema-sense" / "manifest.json")["inputs"]] + ["lema-sense", "templates"]
    mtimes = {s: (run / s / "manifest.json").stat().st_mtime for s in stages}
    assert main(["run", str(path)]) == 0
    assert {s: (run / s / "manifest.json").stat().st_mtime for s in stages} == mtimes
    # A new mixing ratio redoes lema-data and what follows it, not the teacher's stages or HSFT.
    assert main(["run", str(path), "--set", "lema.mix_ratio=1.0", "--stages", "lema-data,lema"]) == 0
    assert (run / "lema-data" / "manifest.json").stat().st_mtime > mtimes["lema-data"]
    assert (run / "lema" / "manifest.json").stat().st_mtime > mtimes["lema"]
    assert (run / "templates" / "manifest.json").stat().st_mtime == mtimes["templates"]
    assert read_json(run / "lema-data" / "manifest.json")["counts"]["base_rows"] == n_train

    # An LLM teacher writes the rest of the solution after the corrected step (prompt lema_continue); a
    # continuation whose answer does not verify drops its triplet.
    from supercorrect.stages import lema_data
    from supercorrect.teachers.llm import LLMTeacher
    from supercorrect.teachers.openai_chat import ChatResult

    answers = {p.question: p.answer for p in problems}
    asked = []

    def chat_many(convs, desc):
        out = []
        for c in convs:
            text = c[0]["content"]
            asked.append(text)
            question = text.split("Problem: ", 1)[1].split("\n\nReference solution:")[0]
            good = len(asked) % 2 == 1
            answer = answers[question] if good else "123456"
            out.append(ChatResult(f"Step 3: so it is {answer}.\nStep 4: The answer is {answer}.", "stop", 30, 10))
        return out

    monkeypatch.setattr(lema_data, "make_teacher", lambda cfg, run_dir: LLMTeacher(chat_many, name="fake"))
    assert main(["lema-data", str(path), "--force"]) == 0
    assert len(asked) == 12 and 'numbered from "Step 3:" on' in asked[0] and "Step 2: " in asked[0]
    llm_triplets = read_jsonl(run / "lema-data" / "triplets.jsonl")
    assert len(llm_triplets) == 6
    assert read_json(run / "lema-data" / "manifest.json")["counts"]["dropped_by_reason"] == {"no_continuation": 6}
    assert all(t["completion"].endswith(f"Step 4: The answer is {by_id[t['id']].answer}.\n}}") for t in llm_triplets)


def test_explain_recipe_with_the_reference_teacher_says_only_grounded_exists(tmp_path, tiny_model_dir, capsys):
    path = make_config(tmp_path, tiny_model_dir, "explain")
    assert main(["run", str(path)]) == 0
    run = load_config(path).run_dir
    err = capsys.readouterr().err
    assert "notice: the reference teacher is rule-based and cannot solve problems" in err
    man = read_json(run / "solve-templates" / "manifest.json")
    assert "cannot solve" in man["counts"]["skipped"] and man["counts"]["grounded"]["wrong_share"] == 0
    assert "skipped" in read_json(run / "solve-sft" / "manifest.json")["counts"]
    assert not (run / "solve-sft" / "model").exists()
    assert "skipped" in read_json(run / "eval-solve-sft" / "manifest.json")["summary"]["test"]
    report = (run / "report" / "report.md").read_text()
    assert "explain the reference vs solve" in report and "cannot solve" in report
    assert (run / "hsft" / "model" / "config.json").exists()


class _SolveHandler(_Handler):
    """An OpenAI-compatible stub teacher that solves: right for even problem numbers, wrong for odd ones."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.record(self)
        prompt = body["messages"][-1]["content"]
        question = prompt.split("Problem: ", 1)[1].strip()
        i, answer = self.server.answers[question]
        given = answer if i % 2 == 0 else f"{answer}1"
        text = render_solution([f"We work it out, problem {i}."], given, "Compute step by step.")
        self.reply(200, {"Content-Type": "application/json"}, json.dumps(completion(text, "stop", 50, 20)).encode())


def test_explain_solve_arm_through_an_openai_compatible_stub(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-test")
    problems = load_problems_synthetic(12)
    server = _Server(_SolveHandler)
    server.answers = {p.question: (i, p.answer) for i, p in enumerate(problems)}
    try:
        path = make_config(tmp_path, tiny_model_dir, "explain",
                           teacher={"kind": "openai", "model": "stub", "base_url": server.url, "api_key_env": "STUB_KEY",
                                    "min_success_rate": 0.5})  # fmt: skip
        cfg = load_config(path)
        # The grounded arm comes from the same LLM teacher; here only the solve arm is under test, so its input
        # (the templates stage) is run with the reference teacher.
        run_pipeline(load_config(path, {"teacher": {"kind": "reference"}}), only=["templates"])
        man_t = read_json(cfg.run_dir / "templates" / "manifest.json")
        assert main(["run", str(path), "--stages", "solve-templates,solve-sft"]) == 0
        sent = server.chat_requests()
    finally:
        server.stop()
    run = cfg.run_dir
    counts = read_json(run / "solve-templates" / "manifest.json")["counts"]
    assert counts["problems"] == 12 and counts["answered"] == 12
    assert counts["wrong"] == 6 and counts["wrong_share"] == 0.5 and counts["kept"] == 6
    assert counts["grounded"]["wrong_share"] == 0 and man_t["counts"]["kept"] == 12
    kept = read_jsonl(run / "solve-templates" / "solved.jsonl")
    assert len(kept) == 6 and all(r["prompt"].startswith("Solve the following math problem in a step-by-step XML") for r in kept)
    assert sent == 12
    assert (run / "solve-sft" / "model" / "config.json").exists()
    # Nothing is paid twice: a forced re-run of the stage answers from the cache with the server gone.
    assert main(["solve-templates", str(path), "--force"]) == 0
    assert read_json(run / "solve-templates" / "manifest.json")["teacher_usage"]["requests_sent"] == 0

