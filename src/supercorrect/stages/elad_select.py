"""Stage `elad-select` (ELAD, EGSS): the student's uncertainty on every candidate problem, and which problems
each selection rule gives the teacher.

1. Inter-path: the base student samples `elad.k` HT solutions per problem (batched, resumable); the entropy of
   their final answers.
2. Intra-path: for the first `elad.intra_paths` paths with steps, one prompt per step i: the HT prompt and the
   assistant turn pre-filled with the path's other steps (renumbered), which the student finishes greedily
   (batched, resumable); 1 - share of ablations that keep the path's answer (`uncertainty.py`).
3. Selection: EGSS = the `budget` most uncertain problems by inter + intra. Baselines, at equal total compute
   (student tokens spent + teacher tokens * `teacher_token_weight`): entropy-only (no intra sampling, so the
   intra tokens buy more teacher annotations) and random (no selection sampling at all). The teacher tokens per
   problem used for that exchange are estimated before any teacher call (grounded correction prompt + the
   reference solution, in student tokens); the revise stage reports the real ones.

Writes `samples.jsonl`, `ablations.jsonl`, `scores.jsonl` (one row per problem) and `selection.json`
(ids per arm, budgets, token costs).
"""

from __future__ import annotations

from .. import prompts, xmlformat
from ..config import RunConfig
from ..data import load_problems
from ..errors import UserError
from ..generation import SamplingSettings, generate_resumable, make_backend
from ..io import write_json, write_jsonl
from ..models import chat_prompt
from ..teachers.llm import format_steps
from ..uncertainty import (
    answer_entropy,
    budget_count,
    canonical_answer,
    egss_score,
    equal_compute_count,
    intra_uncertainty,
    mean_or_none,
    select_random,
    select_top,
)
from . import Stage
from .common import STOP, StageDef, model_path

ARMS = ("egss", "entropy", "random")


def stage(cfg: RunConfig) -> Stage:
    spec = cfg.data.get(cfg.elad.data)
    return Stage(
        cfg, "elad-select", sections=("student", "elad", "generation"),
        extra={"data": spec.fingerprint() if spec else None},
    )


def ablated_prefix(steps: list[str], drop: int) -> str:
    """The path's steps without step `drop` (1-based), renumbered, as an unfinished assistant turn."""
    kept = [s for i, s in enumerate(steps, 1) if i != drop]
    return "".join(f"<Step{i}>\n{s.strip()}\n</Step{i}>\n" for i, s in enumerate(kept, 1))


def estimated_teacher_tokens(tokenizer, question: str, solution: str, steps: list[str], raw: str) -> int:
    """What an LLM teacher would read and write for one CLAER revision, in student tokens: the grounded
    correction prompt with the student's steps, plus the reference solution as the continuation it writes."""
    prompt = prompts.render("correction_grounded", problem=question, solution=solution,
                            steps=format_steps(steps, raw))  # fmt: skip
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + len(
        tokenizer(solution, add_special_tokens=False)["input_ids"]
    )


def run(cfg: RunConfig) -> dict:
    e = cfg.elad
    if e.data not in cfg.data:
        raise UserError(f"elad.data: no data set named {e.data!r} (have: {', '.join(cfg.data)})")
    st = stage(cfg)
    path = model_path(cfg, "base")
    st.start()
    problems = load_problems(cfg.data[e.data], cfg.base_dir)
    backend = make_backend(
        cfg.generation.backend, path, cfg.student.dtype, cfg.generation.batch_size,
        cfg.generation.vllm_gpu_memory_utilization,
    )
    tok = backend.tokenizer
    try:
        heads = {p.id: chat_prompt(tok, prompts.render("ht", problem=p.question)) for p in problems}
        settings = SamplingSettings(
            n=e.k, temperature=e.temperature, top_p=cfg.generation.top_p,
            max_new_tokens=e.max_new_tokens or cfg.generation.max_new_tokens, stop=STOP["ht"], seed=cfg.seed + 11,
        )
        gens, inter_stats = generate_resumable(
            backend, [(p.id, heads[p.id]) for p in problems], settings, st.dir / "samples.shard.jsonl",
            desc="elad inter",
        )
        samples = {p.id: [c["text"] for c in gens[p.id]] for p in problems}
        inter_new = sum(c["n_tokens"] for p in problems for c in gens[p.id])
        inter_prompt = sum(len(tok(heads[p.id], add_special_tokens=False)["input_ids"]) for p in problems)

        # Intra-path: the first `intra_paths` samples with steps, each step removed in turn.
        ablate: list[tuple[str, str]] = []
        meta: dict[str, tuple[str, int, int]] = {}
        for p in problems:
            with_steps = [(j, xmlformat.step_texts(xmlformat.parse(t))) for j, t in enumerate(samples[p.id])]
            for j, steps in [x for x in with_steps if x[1]][: e.intra_paths]:
                for i in range(1, len(steps) + 1):
                    key = f"{p.id}#{j}#{i}"
                    ablate.append((key, heads[p.id] + ablated_prefix(steps, i)))
                    meta[key] = (p.id, j, i)
        intra_settings = SamplingSettings(max_new_tokens=e.intra_max_new_tokens, stop=STOP["ht"], seed=cfg.seed)
        agens, _ = generate_resumable(backend, ablate, intra_settings, st.dir / "ablations.shard.jsonl",
                                      desc="elad intra")  # fmt: skip
        intra_new = sum(agens[k][0]["n_tokens"] for k, _ in ablate)
        intra_prompt = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for _, t in ablate)

        abl_rows, per_path = [], {}
        for key, _ in ablate:
            pid, j, i = meta[key]
            text = agens[key][0]["text"]
            ans = canonical_answer(text)
            abl_rows.append({"key": key, "id": pid, "sample": j, "dropped_step": i, "text": text, "answer": ans})
            per_path.setdefault((pid, j), []).append(ans)

        rows, teacher_est = [], {}
        for p in problems:
            answers = [canonical_answer(t) for t in samples[p.id]]
            intra = mean_or_none(
                [intra_uncertainty(answers[j], per_path[(pid, j)]) for (pid, j) in per_path if pid == p.id]
            )
            inter = answer_entropy(answers)
            first = xmlformat.step_texts(xmlformat.parse(samples[p.id][0]))
            teacher_est[p.id] = estimated_teacher_tokens(tok, p.question, p.solution, first, samples[p.id][0])
            rows.append({"id": p.id, "answers": answers, "inter": round(inter, 5),
                         "intra": None if intra is None else round(intra, 5), "egss": round(egss_score(inter, intra), 5),
                         "paths_ablated": len({j for (pid, j) in per_path if pid == p.id}),
                         "est_teacher_tokens": teacher_est[p.id]})  # fmt: skip
    finally:
        backend.close()

    pool = len(problems)
    n = budget_count(pool, e.budget_share, e.budget_count)
    per_problem = sum(teacher_est.values()) / max(1, pool)
    inter_cost, intra_cost = inter_new + inter_prompt, intra_new + intra_prompt
    ids = [p.id for p in problems]
    budgets = {
        "egss": n,
        "entropy": equal_compute_count(n, intra_cost, per_problem, e.teacher_token_weight, pool),
        "random": equal_compute_count(n, inter_cost + intra_cost, per_problem, e.teacher_token_weight, pool),
    }
    selection = {
        "egss": select_top({r["id"]: r["egss"] for r in rows}, budgets["egss"], seed=cfg.seed),
        "entropy": select_top({r["id"]: r["inter"] for r in rows}, budgets["entropy"], seed=cfg.seed),
        "random": select_random(ids, budgets["random"], seed=cfg.seed),
    }
    sample_rows = [{"id": p.id, "sample": j, "text": t} for p in problems for j, t in enumerate(samples[p.id])]
    write_jsonl(st.dir / "samples.jsonl", sample_rows)
    write_jsonl(st.dir / "ablations.jsonl", abl_rows)
    write_jsonl(st.dir / "scores.jsonl", rows)
    cost = {
        "inter": {"new_tokens": inter_new, "prompt_tokens": inter_prompt, "sequences": pool * e.k},
        "intra": {"new_tokens": intra_new, "prompt_tokens": intra_prompt, "sequences": len(ablate)},
        "est_teacher_tokens_per_problem": round(per_problem, 1),
        "teacher_token_weight": e.teacher_token_weight,
    }
    # Total compute per arm, in student tokens: its selection sampling plus its teacher annotations.
    spent = {"egss": inter_cost + intra_cost, "entropy": inter_cost, "random": 0}
    cost["total_compute"] = {
        a: round(spent[a] + budgets[a] * per_problem * e.teacher_token_weight) for a in ARMS
    }
    cost["est_teacher_tokens_saved_vs_whole_pool"] = round((pool - n) * per_problem)
    write_json(st.dir / "selection.json", {"pool": pool, "budgets": budgets, "selection": selection, "cost": cost})
    counts = {"pool": pool, "budgets": budgets, "no_intra": sum(1 for r in rows if r["intra"] is None),
              "inter_new_tokens": inter_new, "intra_new_tokens": intra_new,
              "generation_seconds": inter_stats["seconds"]}  # fmt: skip
    print(f"[elad-select] pool {pool}; budgets {budgets}; student tokens inter {inter_cost}, intra {intra_cost}")
    return st.finish(counts, cost=cost)


STAGE = StageDef("elad-select", "ELAD EGSS: student uncertainty per problem and the selected problems", stage, run)
