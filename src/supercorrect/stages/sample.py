"""Stage `sample`: the HSFT student samples k solutions per training problem with the HT prompt; grade them.

Writes `samples.jsonl` (every graded sample), `wrong.jsonl` (distinct wrong solutions with at least one step,
at most `sample.max_wrong_per_problem` per problem: the input of stage `correct`) and per-problem stats.
"""

from __future__ import annotations

from collections import Counter

from .. import prompts, xmlformat
from ..config import RunConfig
from ..data import load_problems
from ..errors import UserError
from ..generation import SamplingSettings, generate_resumable, make_backend
from ..grading import Grader
from ..io import write_jsonl
from ..models import chat_prompt
from . import Stage
from .common import STOP, StageDef, model_path


def stage(cfg: RunConfig) -> Stage:
    spec = cfg.data.get(cfg.sample.data)
    return Stage(
        cfg, "sample", sections=("sample", "generation"), inputs=("hsft",),
        extra={"data": spec.fingerprint() if spec else None},
    )


def run(cfg: RunConfig) -> dict:
    if cfg.sample.data not in cfg.data:
        raise UserError(f"sample.data: no data set named {cfg.sample.data!r} (have: {', '.join(cfg.data)})")
    st = stage(cfg)
    path = model_path(cfg, "hsft")
    st.start()
    problems = load_problems(cfg.data[cfg.sample.data], cfg.base_dir)
    backend = make_backend(
        cfg.generation.backend, path, cfg.student.dtype, cfg.generation.batch_size,
        cfg.generation.vllm_gpu_memory_utilization,
        cfg.generation.tensor_parallel_size, cfg.generation.data_parallel_size,
    )
    try:
        items = [(p.id, chat_prompt(backend.tokenizer, prompts.render("ht", problem=p.question))) for p in problems]
        settings = SamplingSettings(
            n=cfg.sample.k, temperature=cfg.sample.temperature, top_p=cfg.generation.top_p,
            max_new_tokens=cfg.sample.max_new_tokens or cfg.generation.max_new_tokens,
            stop=STOP["ht"], seed=cfg.seed + 7,
        )
        gens, stats = generate_resumable(backend, items, settings, st.dir / "shard.jsonl", desc="sample")
    finally:
        backend.close()

    rows = [
        {"id": p.id, "sample": i, "text": c["text"], "n_tokens": c["n_tokens"], "answer": p.answer}
        for p in problems
        for i, c in enumerate(gens[p.id])
    ]
    with Grader() as grader:
        grades = grader.grade_many([(r["text"], r["answer"]) for r in rows], desc="grade samples")
    for r, g in zip(rows, grades, strict=True):
        r.update(correct=g.correct, reason=g.reason, predicted=g.predicted)

    wrong, seen, per_problem = [], set(), Counter()
    right = Counter(r["id"] for r in rows if r["correct"])
    no_steps = 0
    for r in rows:
        if r["correct"] or (r["id"], r["text"]) in seen or per_problem[r["id"]] >= cfg.sample.max_wrong_per_problem:
            continue
        if not xmlformat.parse(r["text"]).steps:
            no_steps += 1
            continue
        seen.add((r["id"], r["text"]))
        per_problem[r["id"]] += 1
        wrong.append({**r, "key": f"{r['id']}#{r['sample']}"})
    write_jsonl(st.dir / "samples.jsonl", rows)
    write_jsonl(st.dir / "wrong.jsonl", wrong)
    histogram = Counter(right[p.id] for p in problems)
    counts = {
        "problems": len(problems),
        "samples": len(rows),
        "correct": sum(r["correct"] for r in rows),
        "wrong_kept": len(wrong),
        "wrong_without_steps": no_steps,
        "problems_by_right_of_k": {str(k): histogram[k] for k in sorted(histogram)},
        "new_tokens": stats["new_tokens"],
    }
    print(f"[sample] {counts['correct']}/{len(rows)} right; {len(wrong)} wrong solutions kept", flush=True)
    return st.finish(counts, generation=backend.describe())


STAGE = StageDef(
    "sample", "the HSFT student samples k solutions per training problem; keep the wrong ones", stage, run
)
