"""A small run folder with the stage-2 artifacts in the formats the real stages write (templates, correct, pairs,
eval-cross-dpo), built with the project's own renderers and `build_pair`, for the report and export tests.

It holds hostile model text on purpose: a `<script>` tag and a stray `</Step1>` in the student's steps and in its
own correction, and HTML in the problem text.
"""

from __future__ import annotations

from pathlib import Path

from supercorrect import prompts, xmlformat
from supercorrect.io import write_json, write_jsonl
from supercorrect.pair_builder import build_pair

HOSTILE = '<script>document.title="pwned"</script> </Step1> <img src=x onerror=alert(1)>'

# (problem id, question, student steps, blamed k, teacher cause, teacher correction, reason, later right?, pair?)
CASES = [
    ("synthetic-train-0-0", "Ann has 3 apples and buys 4 more, then doubles them. How many?",
     ["3 + 4 = 7", "7 * 2 = 15", "The answer is 15"], 2,
     "7 * 2 was miscomputed.", "7 * 2 = 14", "arith", True, True),
    ("synthetic-train-0-1", "What is (5 + 5) * 3? " + HOSTILE,
     ["5 + 5 = 11 " + HOSTILE, "11 * 3 = 33"], 1,
     "5 + 5 is 10, not 11.", "5 + 5 = 10", "value", False, True),
    ("gsm8k-train-7", "Bob reads 12 pages a day for 3 days, then 5 more. How many pages?",
     ["12 * 3 = 36", "36 + 5 = 40", "So 40 pages"], 2,
     "36 + 5 was added wrongly.", "36 + 5 = 41", None, None, False),
]


def make_run_folder(root: Path) -> Path:
    run = root / "runs" / "fixture"
    teacher = {"name": "reference (rule-based)", "rule_based": True}
    templates, corrections, pairs = [], [], []
    for pid, question, steps, k, cause, corr, reason, _later, pair in CASES:
        solution = xmlformat.render_solution(steps, "?")
        trace = xmlformat.render_correction(steps, k, cause, corr, "42")
        own = f"<Step{k}>\n<Cause>I think it is fine {HOSTILE if k == 1 else ''}</Cause>\n" \
              f"<Correction>{steps[k - 1]} maybe</Correction>\n</Step{k}>"
        row = {
            "key": f"{pid}#0", "id": pid, "student_solution": solution, "student_steps": steps,
            "teacher_trace": trace, "teacher_error": None, "k": k, "teacher_answer_correct": pair,
            "teacher_check": None, "inspector_rounds": 0, "student_step_k": own,
        }
        if reason is not None:
            row["reason"] = reason
        corrections.append(row)
        templates.append({"id": pid, "prompt": prompts.render("ht", problem=question),
                          "completion": xmlformat.render_solution(steps, "42"), "answer": "42",
                          "source": pid.split("-")[0]})
        if pair:
            p, why = build_pair(row["key"], "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n", solution,
                                trace, own, special_tokens=["<|im_end|>"])
            assert p is not None, why
            pairs.append(p.to_row())
    # A wrong solution the teacher could not locate: not in the browser.
    corrections.append({**corrections[0], "key": "synthetic-train-0-0#1", "k": None, "teacher_trace": None,
                        "teacher_error": "timeout", "student_step_k": None})

    def manifest(stage: str, counts: dict, **more) -> None:
        write_json(run / stage / "manifest.json", {"stage": stage, "fingerprint": "f", "counts": counts,
                                                   "seconds": 1.0, "finished_at": "2026-11-29T00:00:00",
                                                   "versions": {"supercorrect": "0.1.0"}, **more})

    write_jsonl(run / "templates" / "hsft.jsonl", templates)
    manifest("templates", {"problems": 4, "kept": 3, "dropped": 1, "dropped_by_reason": {"answer_wrong": 1}},
             teacher=teacher)
    write_jsonl(run / "correct" / "corrections.jsonl", corrections)
    manifest("correct", {"wrong_solutions": 4, "located": 3}, teacher=teacher)
    write_jsonl(run / "pairs" / "pairs.jsonl", pairs)
    manifest("pairs", {"corrections": 4, "pairs": len(pairs), "dropped_by_reason": {"not_located": 1,
                                                                                    "teacher_answer_wrong": 1}})
    evals = [{"id": pid, "greedy": True, "sample": 0, "text": "...", "correct": later, "answer": "42"}
             for pid, *_, later, _pair in CASES if later is not None]
    write_jsonl(run / "eval-cross-dpo" / "train" / "samples.jsonl", evals)
    (run / "report").mkdir(parents=True, exist_ok=True)
    return run


QUESTIONS = {c[0]: c[1] for c in CASES}


def expected_counts() -> dict[str, int]:
    return {"templates": len(CASES), "corrections": len(CASES) + 1, "pairs": sum(c[8] for c in CASES)}


