"""Stage `solve-templates`: explain-based distillation's other arm (Li & Mooney 2024). The teacher SOLVES each
training problem in the hierarchical format (prompt `teacher_solve`: the template-extraction prompt without the
reference solution) instead of explaining the reference solution (stage `templates`, the grounded arm).

Same problems, one request per problem, like `templates`: the same teacher budget. A solved template is kept only
if it parses and its answer verifies (the grader filters the solve-based arm; the grounded arm is filtered the
same way). The manifest gives the share of teacher outputs that are wrong in each arm, and a comparison section
for the report.

The rule-based reference teacher cannot solve a problem (it only rewrites reference steps), so with it only the
grounded arm exists: this stage then prints a one-line notice and records the arm as skipped, and `solve-sft`
and `eval-solve-sft` do the same.
"""

from __future__ import annotations

import sys
from collections import Counter

from .. import prompts, xmlformat
from ..config import RunConfig
from ..data import load_problems
from ..errors import UserError
from ..grading import Grader
from ..io import write_jsonl
from ..teachers import make_teacher
from . import Stage, teacher_check
from .common import StageDef

REFERENCE_NOTICE = (
    "the reference teacher is rule-based and cannot solve problems, so only the grounded (explain) arm exists "
    "with it; set teacher.kind to openai or local for the solve-based arm"
)


def stage(cfg: RunConfig) -> Stage:
    spec = cfg.data.get(cfg.templates.data)
    return Stage(
        cfg, "solve-templates", sections=("teacher", "templates"), inputs=("templates",),
        extra={"data": spec.fingerprint() if spec else None},
    )  # fmt: skip


def shares(dropped_by_reason: dict, problems: int) -> dict:
    """Of the teacher's outputs: answered, unusable (no steps / no answer), wrong (answer does not verify)."""
    failed = dropped_by_reason.get("teacher_failed", 0)
    unusable = dropped_by_reason.get("no_steps", 0) + dropped_by_reason.get("no_answer", 0)
    wrong = sum(v for k, v in dropped_by_reason.items() if k.startswith("answer_"))
    answered = problems - failed
    return {
        "problems": problems, "answered": answered, "unusable": unusable, "wrong": wrong,
        "kept": answered - unusable - wrong,
        "wrong_share": round(wrong / answered, 4) if answered else None,
        "unusable_share": round(unusable / answered, 4) if answered else None,
    }  # fmt: skip


def section(grounded: dict, solved: dict | None, g_usage: dict, s_usage: dict | None, note: str | None) -> str:
    def row(name: str, s: dict, u: dict) -> str:
        pct = "-" if s["wrong_share"] is None else f"{100 * s['wrong_share']:.1f}"
        toks = (u.get("prompt_tokens", 0) or 0) + (u.get("completion_tokens", 0) or 0)
        return (f"| {name} | {s['problems']} | {s['answered']} | {s['wrong']} | {pct} | {s['unusable']} | "
                f"{s['kept']} | {toks} |")  # fmt: skip

    lines = [
        "## Explain-based distillation: explain the reference vs solve\n",
        "Same problems, one teacher request each. *Wrong*: the template parses but its answer does not verify "
        "(dropped by the grader in both arms).\n",
        "| arm | problems | answered | wrong | wrong % of answered | unusable | kept | teacher tokens |",
        "|---|---|---|---|---|---|---|---|",
        row("grounded (explains the reference)", grounded, g_usage),
    ]
    lines.append(row("solve-based (solves alone)", solved, s_usage or {}) if solved else f"\nSolve-based arm: {note}.")
    return "\n".join(lines) + "\n"


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    grounded_man = st.upstream("templates")
    grounded = shares(grounded_man["counts"]["dropped_by_reason"], grounded_man["counts"]["problems"])
    teacher = make_teacher(cfg, cfg.run_dir)
    if teacher.rule_based:
        st.start()
        print(f"[solve-templates] notice: {REFERENCE_NOTICE}", file=sys.stderr, flush=True)
        write_jsonl(st.dir / "solved.jsonl", [])
        md = section(grounded, None, grounded_man.get("teacher_usage") or {}, None, REFERENCE_NOTICE)
        return st.finish({"skipped": REFERENCE_NOTICE, "grounded": grounded}, teacher=teacher.describe(),
                         report_section=md)  # fmt: skip
    from ..teachers.llm import _output, user

    problems = load_problems(cfg.data[cfg.templates.data], cfg.base_dir)
    st.start()
    convs = [user(prompts.render("teacher_solve", problem=p.question)) for p in problems]
    outputs = [_output(r) for r in teacher.chat_many(convs, f"{teacher.name} solve")] if convs else []
    kept, dropped, reasons, candidates = [], [], Counter(), []
    for p, out in zip(problems, outputs, strict=True):
        if out.text is None:
            reasons["teacher_failed"] += 1
            dropped.append({"id": p.id, "reason": "teacher_failed", "detail": out.error, "text": None})
            continue
        parsed = xmlformat.parse(out.text)
        why = "no_steps" if not parsed.steps else "no_answer" if parsed.answer is None else None
        if why:
            reasons[why] += 1
            dropped.append({"id": p.id, "reason": why, "detail": "; ".join(parsed.issues), "text": out.text})
        else:
            candidates.append((p, out.text))
    with Grader() as grader:
        grades = grader.grade_many([(t, p.answer) for p, t in candidates], desc="grade solved templates")
    for (p, text), g in zip(candidates, grades, strict=True):
        if not g.correct:
            reasons[f"answer_{g.reason}"] += 1
            dropped.append({"id": p.id, "reason": f"answer_{g.reason}",
                            "detail": f"{g.predicted!r} vs reference {p.answer!r}", "text": text})  # fmt: skip
            continue
        kept.append({"id": p.id, "prompt": prompts.render("ht", problem=p.question), "completion": text.strip(),
                     "answer": p.answer, "source": p.source})  # fmt: skip
    write_jsonl(st.dir / "solved.jsonl", kept)
    write_jsonl(st.dir / "dropped.jsonl", dropped)
    solved = shares(dict(reasons), len(problems))
    asked = teacher_check.tally(outputs)
    print(f"[solve-templates] kept {len(kept)}/{len(problems)}; wrong share {solved['wrong_share']} "
          f"(grounded {grounded['wrong_share']})", flush=True)  # fmt: skip
    teacher_check.enforce(cfg, "solve-templates", asked, st.dir / "dropped.jsonl")
    if not kept:
        raise UserError(f"solve-templates: the teacher solved none of {len(problems)} problems correctly; "
                        f"see {st.dir / 'dropped.jsonl'}")  # fmt: skip
    md = section(grounded, solved, grounded_man.get("teacher_usage") or {}, teacher.usage(), None)
    return st.finish(
        {**solved, "dropped_by_reason": dict(reasons), "grounded": grounded, "teacher": asked.to_dict()},
        teacher=teacher.describe(), teacher_usage=teacher.usage(), report_section=md,
    )


STAGE = StageDef(
    "solve-templates", "explain-based distillation's solve arm: the teacher solves without the reference",
    stage, run,
)  # fmt: skip
