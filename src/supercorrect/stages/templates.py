"""Stage `templates`: the teacher turns reference solutions into hierarchical thought templates (HSFT data).

Keeps a template only if it parses (steps and an <Answer>) and its answer verifies against the reference answer;
every dropped item is written with its reason. Output: `hsft.jsonl` (prompt, completion, ids) and
`dropped.jsonl`, plus the manifest with kept / dropped-by-reason counts, how the teacher requests ended
(`counts.teacher`, failures by kind), the data rows skipped (`skip_bad_rows`) and the teacher's usage.
The outputs are written before `teacher_check.enforce` may stop the stage (spend cap, too few answers).
"""

from __future__ import annotations

from collections import Counter

from .. import prompts, xmlformat
from ..config import RunConfig
from ..data import load_problems_with_report
from ..errors import UserError
from ..grading import Grader
from ..io import write_jsonl
from ..teachers import make_teacher
from . import Stage, teacher_check
from .common import StageDef


def stage(cfg: RunConfig) -> Stage:
    spec = cfg.data.get(cfg.templates.data)
    # The seed stays hashed although the reference teacher is deterministic: dropping it would change the
    # fingerprint of every finished stage downstream (hsft onwards), and the templates stage costs next to nothing.
    return Stage(
        cfg, "templates", sections=("teacher", "templates"), extra={"data": spec.fingerprint() if spec else None},
    )


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    if cfg.templates.data not in cfg.data:
        raise UserError(f"templates.data: no data set named {cfg.templates.data!r} (have: {', '.join(cfg.data)})")
    try:
        problems, load_report = load_problems_with_report(cfg.data[cfg.templates.data], cfg.base_dir)
    except UserError as e:
        raise UserError(f"data.{cfg.templates.data}: {e}") from None
    teacher = make_teacher(cfg, cfg.run_dir)
    st.start()
    outputs = teacher.templates(problems)

    kept, dropped, reasons = [], [], Counter()

    def drop(p, reason: str, detail: str | None, text: str | None, **more: str) -> None:
        reasons[reason] += 1
        dropped.append({"id": p.id, "reason": reason, "detail": detail, "text": text, **more})

    candidates = []
    for p, out in zip(problems, outputs, strict=True):
        if out.text is None:
            drop(p, "teacher_failed", out.error, None, teacher_error_kind=teacher_check.failure_kind(out.error))
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
    asked = teacher_check.tally(outputs)
    counts = {
        "problems": len(problems), "kept": len(kept), "dropped": len(dropped), "dropped_by_reason": dict(reasons),
        "teacher": asked.to_dict(), "skipped_rows": load_report.n_skipped,
    }  # fmt: skip
    print(f"[templates] kept {len(kept)}/{len(problems)}; dropped {dict(reasons)}", flush=True)
    teacher_check.enforce(cfg, "templates", asked, st.dir / "dropped.jsonl")
    return st.finish(
        counts, teacher=teacher.describe(), teacher_usage=teacher.usage(),
        data={"location": load_report.location, "rows_read": load_report.rows_read,
              "skipped": [{"line": line, "reason": why} for line, why in load_report.skipped[:100]]},
    )  # fmt: skip


STAGE = StageDef(
    "templates", "teacher turns reference solutions into hierarchical templates", stage, run
)
