"""ELAD and REER (issue 14): the uncertainty formulas on hand-computed cases, the selection budget, the CLAER
continuation, REER's clipped score and keep-only-if-better rule, the overlap measures, resume by fingerprint,
and a tiny end-to-end run of each recipe through `supercorrect run`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from supercorrect.cli import main
from supercorrect.config import load_config
from supercorrect.data import load_problems
from supercorrect.errors import UserError
from supercorrect.io import read_json, read_jsonl
from supercorrect.reer import SearchState, clipped_mean, refine_step, split_segments
from supercorrect.schema import Problem, RefStep
from supercorrect.stages.elad_revise import llm_continuations, reference_continuation, revised_rationale
from supercorrect.stages.elad_select import ablated_prefix
from supercorrect.teachers.llm import LLMTeacher
from supercorrect.teachers.openai_chat import ChatResult
from supercorrect.textsim import lcs_length, ngram_containment, quantiles, rouge_l, tokens
from supercorrect.uncertainty import (
    NO_ANSWER,
    answer_entropy,
    budget_count,
    canonical_answer,
    egss_score,
    equal_compute_count,
    intra_uncertainty,
    select_random,
    select_top,
)
from supercorrect.xmlformat import parse, step_texts

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------- ELAD formulas


def test_answer_entropy_hand_computed():
    assert answer_entropy(["5", "5", "5", "5"]) == 0.0
    assert answer_entropy(["1", "2", "3", "4"]) == pytest.approx(1.0)  # k different answers: the maximum
    # two answers 2:2 -> ln 2 nats; normalised by ln 4 -> 0.5
    assert answer_entropy(["1", "1", "2", "2"], normalize=False) == pytest.approx(math.log(2))
    assert answer_entropy(["1", "1", "2", "2"]) == pytest.approx(0.5)
    # 3:1 -> -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623 nats
    assert answer_entropy(["7", "7", "7", "9"], normalize=False) == pytest.approx(0.562335, abs=1e-6)
    assert answer_entropy(["7"]) == 0.0


def test_canonical_answers_compare_numbers_by_value():
    assert canonical_answer("<Answer>12.0</Answer>") == canonical_answer("so \\boxed{12}") == "12"
    assert canonical_answer("<Answer>1,200</Answer>") == "1200"
    assert canonical_answer("no number here") == NO_ANSWER
    assert answer_entropy([canonical_answer(t) for t in ("<Answer>3</Answer>", "<Answer>3.0</Answer>")]) == 0.0


def test_intra_uncertainty_hand_computed():
    # path answer 10; removing each of 4 steps gives 10, 10, 7, <none>: consistency 2/4 -> uncertainty 0.5
    assert intra_uncertainty("10", ["10", "10", "7", NO_ANSWER]) == pytest.approx(0.5)
    assert intra_uncertainty("10", ["10", "10"]) == 0.0  # the answer never changes: certain
    assert intra_uncertainty("10", ["3", "4"]) == 1.0  # changes whichever step is removed: most uncertain
    assert intra_uncertainty("10", []) is None  # no steps to remove
    assert egss_score(0.5, None) == 0.5 and egss_score(0.5, 0.25) == 0.75


def test_ablated_prefix_drops_one_step_and_renumbers():
    out = ablated_prefix(["a = 1", "b = 2", "c = 3"], 2)
    assert out == "<Step1>\na = 1\n</Step1>\n<Step2>\nc = 3\n</Step2>\n"
    assert step_texts(parse(out)) == ["a = 1", "c = 3"]


def test_selection_budget_is_honoured():
    assert budget_count(40, 0.25, None) == 10
    assert budget_count(40, 0.25, 7) == 7  # a count wins over the share
    assert budget_count(5, None, 50) == 5  # never more than the pool
    scores = {f"p{i}": s for i, s in enumerate([0.1, 0.9, 0.5, 0.9, 0.0, 0.3])}
    top = select_top(scores, 3, seed=1)
    assert len(top) == 3 and set(top) == {"p1", "p3", "p2"}  # the most uncertain first
    assert select_top(scores, 0) == []
    rnd = select_random(list(scores), 4, seed=0)
    assert len(rnd) == 4 and len(set(rnd)) == 4 and rnd == select_random(list(scores), 4, seed=0)
    # equal compute: 1000 spare student tokens buy 1000 // (100 * 2) = 5 more teacher annotations
    assert equal_compute_count(3, 1000, 100, 2.0, pool=40) == 8
    assert equal_compute_count(3, 10**9, 100, 1.0, pool=40) == 40


# ----------------------------------------------------------------------------------------------- CLAER


def _problem() -> Problem:
    return Problem(
        id="p", question="Tom has 3 boxes of 4 apples and eats 2. How many are left?", solution="3*4=12. 12-2=10.",
        answer="10", source="synthetic",
        steps=[RefStep(text="He has 3*4 = 12 apples.", expr="3*4", value="12"),
               RefStep(text="He has 12-2 = 10 left.", expr="12-2", value="10")],
    )  # fmt: skip


def test_claer_continuation_format_with_the_reference_teacher():
    p = _problem()
    student = ["He has 3*4 = 12 apples.", "He has 12-3 = 9 left."]
    cont = reference_continuation(p, 2)
    assert cont == ["He has 12-2 = 10 left."]
    text = revised_rationale(student, 2, cont, p.answer)
    parsed = parse(text)
    assert step_texts(parsed) == ["He has 3*4 = 12 apples.", "He has 12-2 = 10 left."]  # student's 1, then ref 2..
    assert parsed.answer == "10" and [s.index for s in parsed.steps] == [1, 2]
    assert parse(revised_rationale(student, 1, reference_continuation(p, 1), "10")).steps[0].body.startswith("He")
    assert len(reference_continuation(p, 5)) == 1  # past the reference's end: its last step


def test_claer_continuation_with_an_llm_teacher_parses_its_steps():
    seen = []

    def chat_many(convs, desc):
        seen.extend(convs)
        return [ChatResult(text="<Step2>\n12 - 2 = 10\n</Step2>\n<Answer>10</Answer>", finish_reason="stop"),
                ChatResult(text="I cannot do that.", finish_reason="stop")]  # fmt: skip

    teacher = LLMTeacher(chat_many, name="fake")
    p = _problem()
    out = llm_continuations(teacher, [(p, ["3*4 = 12", "12-3 = 9"], 2, "12-3 is wrong"), (p, ["x"], 1, "")])
    assert out == [["12 - 2 = 10"], None]
    prompt = seen[0][0]["content"]
    assert "Step 1: 3*4 = 12" in prompt and "12-3 = 9" not in prompt and "<Step2></Step2>" in prompt
    assert "12-3 is wrong" in prompt


# ----------------------------------------------------------------------------------------------- REER


def test_reer_score_clips_each_token_to_minus_two():
    assert clipped_mean([-0.5, -10.0, 0.0]) == pytest.approx((-0.5 - 2.0 + 0.0) / 3)
    assert clipped_mean([-float("inf"), -1.0]) == pytest.approx(-1.5)
    assert clipped_mean([0.3]) == 0.0  # a log-prob cannot be positive; clipped anyway
    assert clipped_mean([]) == -2.0


def test_refine_keeps_a_rewrite_only_when_the_score_improves():
    """The score is planted: 'good' raises it, 'bad' lowers it. A lowering candidate is never kept, even when it is
    the only one; ties are not kept either."""
    value = {"good": 1.0, "bad": -1.0, "same": 0.0}

    def score(pairs):
        return [sum(value.get(w, 0.0) for w in z.split()) for _, z in pairs]

    a = SearchState("a", ["x", "y"], 0.0)
    b = SearchState("b", ["x", "y"], 0.0)
    c = SearchState("c", ["x", "y"], 0.0)
    cands = {"a": ["bad", "good"], "b": ["bad", "bad"], "c": ["same"]}
    n = refine_step([a, b, c], 0, lambda items: [cands[s.key] for s, _ in items], score)
    assert n == 1
    assert a.segments == ["good", "y"] and a.score == 1.0
    assert b.segments == ["x", "y"] and b.score == 0.0  # both candidates lower it: unchanged
    assert c.segments == ["x", "y"]  # equal score: not kept
    assert [h["accepted"] for h in b.history] == [False]
    # step 1 rewrites segment 1; threshold stops a problem once reached
    refine_step([a], 1, lambda items: [["good"]], score, threshold=2.0)
    assert a.segments == ["good", "good"] and a.done and a.score_after(0) == 0.0 and a.score_after(1) == 1.0 and a.score_after(2) == 2.0
    assert refine_step([a], 2, lambda items: pytest.fail("a finished search proposes nothing"), score) == 0


def test_split_segments():
    assert split_segments("First. Second! Third?\nFourth", 3) == ["First.", "Second!", "Third? Fourth"]
    assert split_segments("", 3) == [""]


def test_rouge_l_and_ngram_overlap_on_known_strings():
    assert tokens("He has 12-2 = 10.") == ["he", "has", "12", "-", "2", "=", "10", "."]
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    # LCS("the cat sat", "the cat on the mat") = "the cat" (2): P = 2/3, R = 2/5, F = 0.5
    assert rouge_l("the cat sat", "the cat on the mat") == pytest.approx(0.5)
    assert rouge_l("same words", "same words") == 1.0 and rouge_l("", "x") == 0.0
    # y's 2-grams: (a b) (b c) (c d); z holds (a b) and (c d): 2/3
    assert ngram_containment("a b x c d", "a b c d", n=2) == pytest.approx(2 / 3)
    assert ngram_containment("anything", "short", n=3) == 0.0
    assert quantiles([3.0, 1.0, 2.0]) == {"p0": 1.0, "p25": 2.0, "p50": 2.0, "p75": 3.0, "p90": 3.0, "p100": 3.0}


# ----------------------------------------------------------------------------------------------- end to end


def _config(tmp_path: Path, model: Path, recipe: str, **extra) -> Path:
    cfg = {
        "name": recipe, "recipe": recipe, "run_root": str(tmp_path / "runs"),
        "student": {"model": str(model)}, "teacher": {"kind": "reference"},
        "generation": {"batch_size": 16, "max_new_tokens": 24},
        "data": {"train": {"kind": "synthetic", "split": "train", "n": 8, "max_steps": 3},
                 "test": {"kind": "synthetic", "split": "test", "n": 4, "max_steps": 3}},
        "hsft": {"epochs": 1, "batch_size": 4, "max_length": 384, "learning_rate": 1e-3, "logging_steps": 1},
        "elad": {"k": 3, "intra_max_new_tokens": 8, "budget_count": 2},
        "reer": {"draft_max_new_tokens": 16, "candidates": 2, "segment_max_new_tokens": 8, "low_steps": 1,
                 "high_steps": 2, "max_segments": 2},
        "evaluate": {"sets": ["test"]},
        **extra,
    }  # fmt: skip
    p = tmp_path / f"{recipe}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _plant_steps(run: Path, cfg) -> None:
    """Give the random model's samples real steps (one wrong) so that intra-path ablation and CLAER have work."""
    import json

    rows = []
    for p in load_problems(cfg.data["train"], cfg.base_dir):
        steps = [f"{s.expr} = {s.value}" for s in p.steps]
        steps[-1] = steps[-1].split("=")[0] + "= 999"
        body = "".join(f"<Step{i}>\n{s}\n</Step{i}>\n" for i, s in enumerate(steps, 1)) + "<Answer>999</Answer>"
        rows += [{"key": p.id, "completions": [{"text": body, "n_tokens": 9, "finish": "stop"}] * 3}]
    (run / "elad-select" / "samples.shard.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_elad_end_to_end_tiny(tmp_path, tiny_model_dir):
    path = _config(tmp_path, tiny_model_dir, "elad")
    cfg = load_config(path)
    run = cfg.run_dir
    # Plant the inter-path samples in the stage's resumable shard: the stage then ablates their steps.
    from supercorrect.stages.elad_select import stage as select_stage

    select_stage(cfg).start()
    _plant_steps(run, cfg)
    assert main(["run", str(path)]) == 0
    sel = read_json(run / "elad-select" / "selection.json")
    assert len(sel["selection"]["egss"]) == 2  # budget_count honoured
    assert len(sel["selection"]["random"]) >= 2 and len(sel["selection"]["entropy"]) >= 2
    scores = read_jsonl(run / "elad-select" / "scores.jsonl")
    assert all(r["inter"] == 0.0 for r in scores)  # three identical planted answers
    assert all(r["paths_ablated"] == 1 and r["intra"] is not None for r in scores)
    abl = read_jsonl(run / "elad-select" / "ablations.jsonl")
    assert len(abl) == sum(len(p.steps) for p in load_problems(cfg.data["train"], cfg.base_dir))
    cost = read_json(run / "elad-select" / "manifest.json")["cost"]
    assert cost["inter"]["new_tokens"] == 8 * 3 * 9 and cost["intra"]["new_tokens"] > 0
    revised = read_jsonl(run / "elad-revise" / "revised.jsonl")
    assert revised and all(r["k"] is not None for r in revised)  # every planted path has a wrong last step
    for r in revised:
        parsed = parse(r["rationale"])
        assert r["kept"] and parsed.answer is not None and "999" not in r["rationale"]
        assert len(parsed.steps) >= r["k"]
    for arm in ("elad-sft", "elad-sft-entropy", "elad-sft-random"):
        assert (run / arm / "model" / "config.json").exists()
        assert (run / f"eval-{arm}" / "manifest.json").exists()
    md = (run / "elad-report" / "elad.md").read_text()
    assert "| egss | 2 |" in md and "student tok. intra" in md
    # Everything is up to date on a second run (the reports are always redone).
    mtimes = {s: (run / s / "manifest.json").stat().st_mtime for s in ("elad-select", "elad-revise", "elad-sft")}
    assert main(["run", str(path)]) == 0
    assert {s: (run / s / "manifest.json").stat().st_mtime for s in mtimes} == mtimes
    # A new budget redoes the selection stage.
    assert main(["elad-select", str(path), "--set", "elad.budget_count=3"]) == 0
    assert len(read_json(run / "elad-select" / "selection.json")["selection"]["egss"]) == 3


def test_reer_end_to_end_tiny_and_resume(tmp_path, tiny_model_dir):
    path = _config(tmp_path, tiny_model_dir, "reer", evaluate={"sets": ["test"], "prompt": "cot"})
    cfg = load_config(path)
    run = cfg.run_dir
    assert main(["run", str(path)]) == 0
    traj = read_jsonl(run / "reer-search" / "trajectories.jsonl")
    assert len(traj) == 8
    for t in traj:
        assert t["draft"]["score"] <= t["low"]["score"] <= t["high"]["score"] <= 0  # only improvements kept
        assert -2.0 <= t["draft"]["score"]
        assert 0 <= t["high"]["rouge_l"] <= 1 and 0 <= t["high"]["ngram"] <= 1
    rows = read_jsonl(run / "reer-sft-high" / "sft.jsonl")
    assert all(r["completion"].endswith(t["y"]) for r, t in zip(rows, traj, strict=True))
    man = read_json(run / "reer-search" / "manifest.json")
    assert set(man["summary"]) == {"draft", "low", "high"}
    assert "Pearson r" in (run / "reer-report" / "reer.md").read_text()
    # Resume: a search killed after step 1 continues from its saved state (step 0 is not proposed again).
    state = read_json(run / "reer-search" / "state.json")
    assert state["steps_done"] == 2
    m0 = (run / "reer-search" / "step0.shard.jsonl").stat().st_mtime
    (run / "reer-search" / "manifest.json").unlink()
    state["steps_done"] = 1
    (run / "reer-search" / "state.json").write_text(__import__("json").dumps(state))
    assert main(["reer-search", str(path)]) == 0
    assert (run / "reer-search" / "step0.shard.jsonl").stat().st_mtime == m0
    # reject_leaky with threshold 0 flags every trajectory sharing a token sequence with y and drops it from the SFT
    # data (or, if every one is flagged, the SFT stage stops with a one-line error).
    from supercorrect.pipeline import run_pipeline

    strict = load_config(path, {"reer.reject_leaky": True, "reer.leak_threshold": 0.0})
    run_pipeline(strict, only=["reer-search"])
    new = read_jsonl(run / "reer-search" / "trajectories.jsonl")
    flagged = sum(t["high"]["flagged"] for t in new)
    assert flagged == sum(t["high"]["rouge_l"] > 0 for t in new)
    if flagged == len(new):
        with pytest.raises(UserError, match="flagged as leaky"):
            run_pipeline(strict, only=["reer-sft-high"])
    else:
        run_pipeline(strict, only=["reer-sft-high"])
        counts = read_json(run / "reer-sft-high" / "manifest.json")["counts"]
        assert counts["rejected_leaky"] == flagged and counts["examples"] == len(new) - flagged


def test_recipe_configs_name_recipe_and_command():
    for name in ("elad", "reer"):
        path = REPO / "configs" / "recipes" / f"{name}.yaml"
        cfg = load_config(path)
        head = path.read_text().splitlines()[:2]
        assert cfg.recipe == name and head[0].startswith(f"# Recipe: {name} ")
        assert head[1] == f"# Run: supercorrect run configs/recipes/{name}.yaml"


def test_reer_budgets_must_grow(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: t\ndata: {train: {kind: synthetic, split: train, n: 4}}\nreer: {low_steps: 3, high_steps: 3}\n")
    with pytest.raises(UserError, match="high_steps"):
        load_config(p)
