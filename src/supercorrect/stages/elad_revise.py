"""Stage `elad-revise` (ELAD, CLAER): the teacher revises the student's own rationale on every selected problem.

For each problem selected by any arm (each problem is revised once, so arms that share a problem share its
revision and the teacher is never paid twice; LLM answers are also cached on disk): the student path revised is
its first wrong sample (the first sample when all are right). The teacher verifies its steps in order and stops
at the first wrong one, k (`teacher.corrections(mode="stepwise")`; the reference teacher's rule-based check is
already step by step), then writes the correct continuation from step k:
- reference teacher: the reference solution's steps from step k on (rendered as the templates stage does);
- LLM teacher: the `claer_continue` prompt (problem, reference solution, the student's steps 1..k-1, the cause).
The revised rationale is the student's steps 1..k-1 followed by the continuation, in the HT format, ending with
the reference answer; a path with no error is kept as it is. A rationale is kept for SFT only if it parses and
its answer verifies. Writes `revised.jsonl` (one row per revised problem, with the arms that selected it).
"""

from __future__ import annotations

from collections import Counter

from .. import prompts, xmlformat
from ..config import RunConfig
from ..data import load_problems
from ..grading import Grader
from ..io import read_json, read_jsonl, write_jsonl
from ..schema import Problem
from ..teachers import CorrectionRequest, Teacher, make_teacher
from ..teachers.llm import ALL_STEPS_CORRECT_CAUSE, format_steps, user
from ..teachers.reference import step_text
from . import Stage, teacher_check
from .common import StageDef


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "elad-revise", sections=("teacher", "elad"), inputs=("elad-select",))


def reference_continuation(problem: Problem, k: int) -> list[str]:
    """The reference steps from step k on (the last one if the student already wrote more steps than it has)."""
    ref = problem.steps
    if not ref:
        return [problem.solution.strip()]
    return [step_text(s) for s in ref[min(k, len(ref)) - 1 :]]


def revised_rationale(student_steps: list[str], k: int, continuation: list[str], answer: str) -> str:
    """CLAER's output: the student's steps 1..k-1, then the continuation numbered from k, then the answer."""
    return xmlformat.render_solution([*student_steps[: k - 1], *continuation], answer)


def llm_continuations(teacher: Teacher, items: list[tuple[Problem, list[str], int, str]]) -> list[list[str] | None]:
    """The teacher writes steps k.. for each (problem, student steps, k, cause); None when its reply has no steps."""
    convs = [
        user(prompts.render("claer_continue", problem=p.question, solution=p.solution, k=str(k),
                            last_good=str(k - 1), cause=cause or "(no reason given)",
                            steps=format_steps(steps[: k - 1]) if k > 1 else "(none)"))
        for p, steps, k, cause in items
    ]  # fmt: skip
    replies = teacher.chat_many(convs, "claer continuation") if convs else []  # type: ignore[attr-defined]
    out: list[list[str] | None] = []
    for r in replies:
        steps = xmlformat.step_texts(xmlformat.parse(r.text or ""))
        out.append(steps or None)
    return out


def _all_steps_correct(parsed, k: int) -> bool:
    """The stepwise LLM teacher marks the last step when it judged every step right (teachers/llm.py)."""
    step = next((s for s in parsed.steps if s.index == k), None)
    return step is not None and step.cause == ALL_STEPS_CORRECT_CAUSE


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("elad-select")
    sel = read_json(cfg.run_dir / "elad-select" / "selection.json")
    arms_of: dict[str, list[str]] = {}
    for arm, ids in sel["selection"].items():
        for i in ids:
            arms_of.setdefault(i, []).append(arm)
    problems = {p.id: p for p in load_problems(cfg.data[cfg.elad.data], cfg.base_dir)}
    samples: dict[str, list[str]] = {}
    for r in read_jsonl(cfg.run_dir / "elad-select" / "samples.jsonl"):
        samples.setdefault(r["id"], []).append(r["text"])
    ids = sorted(arms_of)
    teacher = make_teacher(cfg, cfg.run_dir)
    st.start()

    with Grader() as grader:
        picked = {}
        for i in ids:
            grades = grader.grade_many([(t, problems[i].answer) for t in samples[i]])
            wrong = [j for j, g in enumerate(grades) if not g.correct]
            picked[i] = (wrong[0] if wrong else 0, bool(wrong))
        requests = []
        for i in ids:
            text = samples[i][picked[i][0]]
            requests.append(CorrectionRequest(problems[i], text, xmlformat.step_texts(xmlformat.parse(text))))
        traces = teacher.corrections(requests, mode="stepwise")

        rows, why = [], Counter()
        cont_needed: list[tuple[int, tuple[Problem, list[str], int, str]]] = []
        for n, (i, req, t) in enumerate(zip(ids, requests, traces, strict=True)):
            parsed = xmlformat.parse(t.text) if t.text else None
            k = parsed.first_error if parsed else None
            steps = req.steps
            row = {"id": i, "arms": arms_of[i], "sample": picked[i][0], "student_was_wrong": picked[i][1],
                   "student_solution": req.student_solution, "k": k, "teacher_error": t.error,
                   "teacher_tokens": t.prompt_tokens + t.completion_tokens}  # fmt: skip
            if t.text is None:
                row["rationale"] = None
                why["teacher_failed"] += 1
            elif k is None or (not picked[i][1] and _all_steps_correct(parsed, k)):
                row["k"] = None
                row["rationale"] = req.student_solution.strip()  # judged right all through: kept as it is
            else:
                k = min(k, len(steps) + 1) if steps else 1
                row["k"] = k
                step_k = next((s for s in parsed.steps if s.index == k), None) if parsed else None
                cause = step_k.cause if step_k is not None and step_k.cause else ""
                if teacher.rule_based:
                    row["rationale"] = revised_rationale(steps, k, reference_continuation(problems[i], k),
                                                         problems[i].answer)  # fmt: skip
                else:
                    cont_needed.append((n, (problems[i], steps, k, cause)))
            rows.append(row)
        if cont_needed:
            conts = llm_continuations(teacher, [x for _, x in cont_needed])
            for (n, (p, steps, k, _)), cont in zip(cont_needed, conts, strict=True):
                if cont is None:
                    rows[n]["rationale"] = None
                    why["no_continuation"] += 1
                else:
                    rows[n]["rationale"] = revised_rationale(steps, k, cont, p.answer)

        graded = [(n, r) for n, r in enumerate(rows) if r["rationale"]]
        grades = grader.grade_many([(r["rationale"], problems[r["id"]].answer) for _, r in graded])
    for (_, r), g in zip(graded, grades, strict=True):
        ok = g.correct and bool(xmlformat.parse(r["rationale"]).steps)
        r["kept"] = ok
        if not ok:
            why["answer_not_verified"] += 1
    for r in rows:
        r.setdefault("kept", False)
        r["prompt"] = prompts.render("ht", problem=problems[r["id"]].question)
    write_jsonl(st.dir / "revised.jsonl", rows)
    asked = teacher_check.tally(traces)
    per_arm = {a: sum(1 for r in rows if a in r["arms"] and r["kept"]) for a in sel["selection"]}
    counts = {"revised": len(rows), "kept": sum(r["kept"] for r in rows), "kept_per_arm": per_arm,
              "located": sum(1 for r in rows if r["k"] is not None), "dropped_by_reason": dict(why),
              "teacher": asked.to_dict()}  # fmt: skip
    print(f"[elad-revise] kept {counts['kept']}/{len(rows)}; per arm {per_arm}")
    teacher_check.enforce(cfg, "elad-revise", asked, st.dir / "revised.jsonl")
    return st.finish(counts, teacher=teacher.describe(), teacher_usage=teacher.usage())


STAGE = StageDef("elad-revise", "ELAD CLAER: the teacher revises the selected student rationales", stage, run)
