"""Stage `correct`: the teacher finds each wrong solution's first wrong step k and corrects it; the student
writes its own analysis and correction of the same step.

Teacher: the grounded correction prompt (LLM teachers; the paper's single pass, or ELAD's CLAER step-by-step
verification with `correct.mode: stepwise`) or the rule-based reference teacher. Optional inspector: a trace
whose final answer does not verify is sent back, at most `correct.inspector_rounds` rounds.
Student: the plain correction prompt (no reference solution), its turn pre-filled with its own steps 1..k-1
marked correct and the opening `<Stepk>` tag, so what it writes is its analysis of step k (stops at `</Stepk>`).
With `correct.missing_step: own_k` (default) a step missing after the student's last one is k = len(steps) + 1.
Writes `corrections.jsonl`, one row per wrong solution (`teacher_error` says why a teacher request failed;
`locator_reason` why the teacher blamed step k, a code of `teachers.reference.REASONS` for the rule-based one),
and the manifest with how the teacher requests ended (`counts.teacher`, failures by kind). Only then may
`teacher_check.enforce` stop the stage (spend cap, too few answers): answers are cached, student work is in
its shard, so a re-run resumes.
"""

from __future__ import annotations

from collections import Counter

from .. import prompts, xmlformat
from ..config import RunConfig
from ..data import load_problems
from ..generation import SamplingSettings, generate_resumable, make_backend
from ..grading import Grader
from ..io import read_jsonl, write_jsonl
from ..models import chat_prompt
from ..teachers import CorrectionRequest, make_teacher
from ..teachers.llm import format_steps
from . import Stage, teacher_check
from .common import StageDef, model_path


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "correct", sections=("teacher", "correct", "generation"), inputs=("sample",))


def unusable_reason(row: dict) -> str | None:
    """Why a row of corrections.jsonl cannot teach anything downstream (Cross-DPO pairs, LEMA triplets): the
    teacher located no wrong step, or its corrected answer does not verify. None when the row is usable."""
    if row["k"] is None:
        return "not_located"
    if not row["teacher_answer_correct"]:
        return "teacher_answer_wrong"
    return None


def correction_context(tokenizer, question: str, steps: list[str], k: int) -> str:
    """What the student sees when it self-corrects, up to just before `<Stepk>`: the chat-templated plain
    correction prompt with its solution, its turn pre-filled with steps 1..k-1 marked correct. The one home of
    that context: the student's own analysis of step k continues it (`student_turn`), and so do the Cross-DPO
    pairs with `pairs.context: correction`. k may be len(steps) + 1 (a missing step: every step marked correct)."""
    head = chat_prompt(tokenizer, prompts.render("correction_plain", problem=question, steps=format_steps(steps)))
    return head + xmlformat.render_correction(steps[: k - 1], None, None, None, "").split("<Answer>")[0]


def student_turn(tokenizer, question: str, steps: list[str], k: int) -> str:
    """The student's prompt for its own analysis of step k: `correction_context` and the opening `<Stepk>`."""
    return correction_context(tokenizer, question, steps, k) + f"<Step{k}>\n"


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("sample")
    wrong = read_jsonl(cfg.run_dir / "sample" / "wrong.jsonl")
    problems = {p.id: p for p in load_problems(cfg.data[cfg.sample.data], cfg.base_dir)}
    requests = []
    for w in wrong:
        parsed = xmlformat.parse(w["text"])
        requests.append(CorrectionRequest(problems[w["id"]], w["text"], xmlformat.step_texts(parsed)))

    teacher = make_teacher(cfg, cfg.run_dir)
    st.start()
    traces = teacher.corrections(requests, mode=cfg.correct.mode)
    rounds = [0] * len(traces)
    with Grader() as grader:

        def check(problem, text: str | None) -> str | None:
            if text is None:
                return "no trace"
            g = grader.grade(text, problem.answer)
            return None if g.correct else f"final answer {g.predicted!r} ({g.reason}), reference {problem.answer!r}"

        if cfg.correct.inspector_rounds and hasattr(teacher, "inspect"):
            traces, rounds = teacher.inspect(
                [r.problem for r in requests], traces, check, rounds=cfg.correct.inspector_rounds
            )
        verdicts = [check(r.problem, t.text) for r, t in zip(requests, traces, strict=True)]

    rows, reasons = [], Counter()
    for w, req, t, why, n_rounds in zip(wrong, requests, traces, verdicts, rounds, strict=True):
        k = xmlformat.parse(t.text).first_error if t.text else None
        if t.text is None:
            reasons["teacher_failed"] += 1
        elif k is None:
            reasons["teacher_found_no_error"] += 1
        elif k > len(req.steps) + (cfg.correct.missing_step == "own_k" and bool(req.steps)):
            reasons["step_out_of_range"] += 1  # own_k keeps step len+1: a step missing after the last one
            k = None
        rows.append(
            {
                "key": w["key"], "id": w["id"], "student_solution": w["text"], "student_steps": req.steps,
                "teacher_trace": t.text, "teacher_error": t.error, "k": k, "locator_reason": t.reason,
                "teacher_step_fix": getattr(t, "step_fix", None),  # rule-based: step k in the student's words, fixed
                "teacher_answer_correct": why is None, "teacher_check": why, "inspector_rounds": n_rounds,
            }
        )

    # The student's own analysis of step k, batched and resumable.
    todo = [r for r in rows if r["k"] is not None]
    generation = None
    if todo:
        backend = make_backend(
            cfg.generation.backend, model_path(cfg, "hsft"), cfg.student.dtype, cfg.generation.batch_size,
            cfg.generation.vllm_gpu_memory_utilization,
            cfg.generation.tensor_parallel_size, cfg.generation.data_parallel_size,
        )
        try:
            items = [
                (r["key"], student_turn(backend.tokenizer, problems[r["id"]].question, r["student_steps"], r["k"]))
                for r in todo
            ]
            settings = SamplingSettings(max_new_tokens=cfg.correct.student_max_new_tokens, stop=("</Step",))
            gens, _ = generate_resumable(backend, items, settings, st.dir / "student.shard.jsonl", desc="student")
        finally:
            backend.close()
        generation = backend.describe()
        for r in todo:
            text = gens[r["key"]][0]["text"]
            r["student_step_k"] = f"<Step{r['k']}>\n" + text.split("</Step")[0].rstrip() + f"\n</Step{r['k']}>"

    write_jsonl(st.dir / "corrections.jsonl", rows)
    asked = teacher_check.tally(traces)
    counts = {
        "wrong_solutions": len(rows),
        "located": len(todo),
        "teacher_answer_correct": sum(r["teacher_answer_correct"] for r in rows),
        "not_located_by_reason": dict(reasons),
        "k_distribution": dict(sorted(Counter(r["k"] for r in rows if r["k"] is not None).items())),
        "locator_reasons": dict(Counter(r["locator_reason"] or "not_given" for r in rows).most_common()),
        "inspector_resent": sum(1 for n in rounds if n),
        "mode": cfg.correct.mode,
        "teacher": asked.to_dict(),
    }
    print(f"[correct] located {len(todo)}/{len(rows)}; teacher answer right {counts['teacher_answer_correct']}")
    teacher_check.enforce(cfg, "correct", asked, st.dir / "corrections.jsonl")
    return st.finish(counts, teacher=teacher.describe(), teacher_usage=teacher.usage(), generation=generation)


STAGE = StageDef(
    "correct", "teacher locates and corrects the first wrong step; the student writes its own", stage, run
)
