"""Stage `templates`: the teacher turns reference solutions into hierarchical thought templates (HSFT data).

Keeps a template only if it parses (steps and an <Answer>) and its answer verifies against the reference answer;
every dropped item is written with its reason. Output: `hsft.jsonl` (prompt, completion, ids) and
`dropped.jsonl`, plus the manifest with kept / dropped-by-reason counts and the teacher's usage.
"""

from __future__ import annotations

from collections import Counter

from .. import prompts, xmlformat
from ..config import RunConfig
from ..grading import Grader
from ..io import write_jsonl
from ..problems import load_problems
from ..teachers import make_teacher
from . import Stage


def stage(cfg: RunConfig) -> Stage:
    spec = cfg.data.get(cfg.templates.data)
    return Stage(
        cfg, "templates", sections=("teacher", "templates"), extra={"data": spec.model_dump() if spec else None}
    )


def run(cfg: RunConfig) -> dict:
    from ..errors import UserError

    st = stage(cfg)
    if cfg.templates.data not in cfg.data:
        raise UserError(f"templates.data: no data set named {cfg.templates.data!r} (have: {', '.join(cfg.data)})")
    st.start()
    problems = load_problems(cfg.data[cfg.templates.data], cfg.base_dir)
    teacher = make_teacher(cfg, cfg.run_dir)
    outputs = teacher.templates(problems)

    kept, dropped, reasons = [], [], Counter()

    def drop(p, reason: str, detail: str | None, text: str | None) -> None:
        reasons[reason] += 1
        dropped.append({"id": p.id, "reason": reason, "detail": detail, "text": text})

    candidates = []
    for p, out in zip(problems, outputs, strict=True):
        if out.text is None:
            drop(p, "teacher_failed", out.error, None)
            continue
        parsed = xmlformat.parse(out.text)
        if not parsed.steps:
            drop(p, "no_steps", "; ".join(parsed.issues), out.text)
        elif parsed.answer is None:
            drop(p, "no_answer", "; ".join(parsed.issues), out.text)
        else:
            candidates.append((p, out.text))

    with Grader() as grader:
        grades = grader.grade_many([(text, p.answer) for p, text in candidates], desc="verify templates")
    for (p, text), g in zip(candidates, grades, strict=True):
        if not g.correct:
            drop(p, f"answer_{g.reason}", f"{g.predicted!r} vs reference {p.answer!r}", text)
            continue
        kept.append(
            {
                "id": p.id,
                "prompt": prompts.render("ht", problem=p.question),
                "completion": text.strip(),
                "answer": p.answer,
                "source": p.source,
            }
        )

    write_jsonl(st.dir / "hsft.jsonl", kept)
    write_jsonl(st.dir / "dropped.jsonl", dropped)
    counts = {"problems": len(problems), "kept": len(kept), "dropped": len(dropped), "dropped_by_reason": dict(reasons)}
    print(f"[templates] kept {len(kept)}/{len(problems)}; dropped {dict(reasons)}", flush=True)
    return st.finish(counts, teacher=teacher.describe(), teacher_usage=teacher.usage())
