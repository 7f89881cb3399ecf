"""Stage `lema-data`: LEMA's correction triplets (An et al., "Learning From Mistakes Makes LLM Better Reasoner",
2024, arXiv 2310.20689) from the `correct` stage's output, and the training sets of the three-way ablation.

A triplet is {the student's incorrect step k, the teacher's explanation (its <Cause>), the corrected solution from
step k to the answer (its <Correction>, then the rest of a correct solution)}, written as LEMA's correction data:
input = LEMA's correction instruction + "Question: ... Original Solution: { Step 1: ... }", output =
"Incorrect Step: Step k.\\nExplanation: ...\\nCorrect Solution:\\n{\\n...\\nStep k: ...\\nStep n: The answer is X.\\n}"
(the "..." line stands for the unchanged steps 1..k-1 and is left out when k = 1, as in LEMA's prompts).

The rest of the solution after the corrected step comes from the teacher: the rule-based reference teacher
continues with the reference steps after the one its correction restates; an LLM teacher is asked once per
triplet (prompt `lema_continue`, answers cached) and its continuation is kept only if its answer verifies.

The ablation asks how much of LEMA's gain is the error signal and how much is one more correct solution. All three
training sets hold the same base rows (plain CoT or HT solutions of the training problems, `lema.mix_ratio` rows
per triplet) plus, at equal completion tokens (the tokens the loss is on):
- `lema`: the triplets;
- `lema-corrected`: the corrected solutions alone (steps 1..k-1, corrected step k, continuation; no incorrect step,
  no explanation), as ordinary solutions of their problems, repeated in seeded order up to the triplets' tokens;
- `lema-plain`: more plain solutions: the reference solutions of the same problems, likewise.
The fill stops when no further row fits, so each budget is at most the triplets' and short of it by less than the
shortest row of its pool (`counts.budget`). A share of the triplet problems (`lema.heldout`) is kept out of all
training sets: on those, `lema-sense` measures the perplexity gap between wrong and corrected solutions.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from .. import prompts, xmlformat
from ..config import RunConfig
from ..data import load_problems
from ..errors import UserError
from ..grading import Grader
from ..io import read_jsonl, write_jsonl
from ..models import load_tokenizer
from ..schema import Problem
from ..teachers import make_teacher
from ..teachers.reference import MissingStep, locate_first_error, step_text
from . import Stage, teacher_check
from .common import StageDef, model_path
from .correct import unusable_reason
from .cot_sft import cot_solution

_ANSWER_LINE = re.compile(r"\bthe (?:final )?answer is\b", re.I)
_STEP_LABEL = re.compile(r"^\s*Step\s*(\d{1,4})\s*[:.]\s*", re.I)


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "lema-data", sections=("teacher", "lema", "templates"), inputs=("templates", "correct"))


# ---- formats -----------------------------------------------------------------------------------------------------


def numbered(steps: list[str], start: int = 1) -> str:
    """LEMA's solution body: one "Step i: text" line per step."""
    return "\n".join(f"Step {i}: {' '.join(s.split())}" for i, s in enumerate(steps, start))


def with_answer(steps: list[str], answer: str) -> list[str]:
    """The steps, ending with LEMA's "The answer is X." step unless the last step already says it."""
    if steps and _ANSWER_LINE.search(steps[-1]):
        return list(steps)
    return [*steps, f"The answer is {answer}."]


def triplet_prompt(question: str, student_steps: list[str], student_answer: str | None) -> str:
    shown = with_answer(student_steps, student_answer) if student_answer else list(student_steps)
    return prompts.render("lema_triplet", problem=question, steps=numbered(shown))


def triplet_completion(k: int, explanation: str, corrected_from_k: list[str]) -> str:
    """LEMA's correction: the incorrect step, the explanation, the correct solution from step k."""
    dots = "...\n" if k > 1 else ""
    return (
        f"Incorrect Step: Step {k}.\nExplanation: {' '.join(explanation.split())}\n"
        f"Correct Solution:\n{{\n{dots}{numbered(corrected_from_k, k)}\n}}"
    )


def solution_text(steps: list[str], answer: str, mix_with: str) -> str:
    """A whole solution in the format of the base rows: plain CoT (boxed answer) or an HT solution."""
    if mix_with == "ht":  # the answer goes in <Answer>: a last step that only states it is dropped
        last_states_answer = steps and _ANSWER_LINE.match(steps[-1].strip())
        return xmlformat.render_solution(steps[:-1] if last_states_answer else steps, answer)
    body = "\n".join(steps)
    return body + f"\nThe final answer is $\\boxed{{{answer}}}$."


def solve_prompt(question: str, mix_with: str) -> str:
    return prompts.render(mix_with, problem=question)


def answer_step_is_wrong(
    problem: Problem, steps: list[str], answer: str | None, k: int, missing_step: MissingStep = "own_k"
) -> bool:
    """Whether the reference teacher's step k means "every step is right but the answer is not" (it then names
    the last step, or with `correct.missing_step: own_k` the missing step, often one past the last). In LEMA's
    numbering the answer is a step of its own, so that step is the incorrect one."""
    verdict = locate_first_error(problem, steps, answer, missing_step)
    return verdict.kind == "final_answer" and verdict.index == k


def build_triplet(
    problem: Problem, steps: list[str], answer: str | None, k: int, cause: str, correction: str,
    continuation: list[str], mix_with: str, final_only: bool = False,
) -> dict:  # fmt: skip
    """One triplet and its two solution texts. `final_only`: the steps are right and the answer step is wrong,
    so the incorrect step is the answer step (after the last one) and the corrected solution keeps every step."""
    fixed = with_answer([correction, *continuation], problem.answer)
    if final_only:
        k, kept, incorrect = len(steps) + 1, list(steps), f"The answer is {answer or 'missing'}."
    else:
        kept, incorrect = steps[: k - 1], steps[k - 1]
    shown = answer if answer or not final_only else "missing"
    return {
        "k": k, "incorrect_step": incorrect, "explanation": cause, "corrected_from_k": fixed,
        "prompt": triplet_prompt(problem.question, steps, shown),
        "completion": triplet_completion(k, cause, fixed),
        "solve_prompt": solve_prompt(problem.question, mix_with),
        "corrected": solution_text([*kept, *fixed], problem.answer, mix_with),
        "wrong": solution_text(with_answer(steps, answer or "unknown"), answer or "unknown", mix_with),
    }  # fmt: skip


# ---- continuations -----------------------------------------------------------------------------------------------


def rule_continuation(problem: Problem, correction: str) -> list[str] | None:
    """Reference steps after the one the reference teacher's correction restates; None when none matches."""
    texts = [step_text(s) for s in problem.steps]
    for j in range(len(texts) - 1, -1, -1):
        if texts[j] and correction.strip().startswith(texts[j].strip()):
            return texts[j + 1 :]
    return None


def parse_continuation(text: str) -> list[str]:
    """The "Step i: ..." lines of an LLM continuation, labels removed (untrusted text: lines only)."""
    out = []
    for line in text.splitlines():
        m = _STEP_LABEL.match(line)
        if m and line[m.end() :].strip():
            out.append(line[m.end() :].strip())
    return out


# ---- budgets -----------------------------------------------------------------------------------------------------


def fill_to_budget(pool: list[dict], sizes: list[int], budget: int, rng: random.Random) -> tuple[list[dict], int]:
    """Rows from `pool` (seeded order, whole passes, repeats allowed) while they fit under `budget` tokens.

    Stops when a whole pass adds nothing, so the total is <= budget and short of it by less than the smallest
    row. Returns the rows and their total tokens."""
    if not pool:
        return [], 0
    chosen, total = [], 0
    while True:
        added = False
        order = list(range(len(pool)))
        rng.shuffle(order)
        for i in order:
            if sizes[i] > 0 and total + sizes[i] <= budget:
                chosen.append(pool[i])
                total += sizes[i]
                added = True
        if not added:
            return chosen, total


# ---- the stage ---------------------------------------------------------------------------------------------------


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("correct")
    settings = cfg.lema
    corrections = read_jsonl(cfg.run_dir / "correct" / "corrections.jsonl")
    templates = {r["id"]: r for r in read_jsonl(cfg.run_dir / "templates" / "hsft.jsonl")}
    train = {p.id: p for p in load_problems(cfg.data[cfg.templates.data], cfg.base_dir)}
    sampled = {p.id: p for p in load_problems(cfg.data[cfg.sample.data], cfg.base_dir)}
    tok = load_tokenizer(model_path(cfg, "base"))
    teacher = make_teacher(cfg, cfg.run_dir)
    st.start()

    # 1. Candidates: located corrections whose teacher answer verifies, with the teacher's cause and correction.
    reasons: Counter[str] = Counter()
    cands = []
    for r in corrections:
        if why := unusable_reason(r):
            reasons[why] += 1
            continue
        k = r["k"]
        steps = xmlformat.parse(r["teacher_trace"]).steps
        cause = steps[k - 1].cause if len(steps) >= k else None
        correction = steps[k - 1].correction if len(steps) >= k else None
        if not (cause and correction and cause.strip() and correction.strip()):
            reasons["no_cause_or_correction"] += 1
            continue
        cands.append({**r, "cause": cause.strip(), "correction": correction.strip(), "problem": sampled[r["id"]]})

    # 2. The rest of the corrected solution after step k.
    asked = None
    if teacher.rule_based:
        for c in cands:
            c["continuation"] = rule_continuation(c["problem"], c["correction"])
    else:
        from ..teachers.llm import _output, user

        convs = [
            user(prompts.render(
                "lema_continue", problem=c["problem"].question, solution=c["problem"].solution, next=str(c["k"] + 1),
                steps=numbered([*c["student_steps"][: c["k"] - 1], c["correction"]]),
            ))
            for c in cands
        ]  # fmt: skip
        outs = [_output(x) for x in teacher.chat_many(convs, "lema continuations")] if convs else []
        asked = teacher_check.tally(outs)
        with Grader() as grader:
            for c, o in zip(cands, outs, strict=True):
                cont = parse_continuation(o.text) if o.text else []
                ok = bool(cont) and grader.grade(cont[-1], c["problem"].answer).correct
                c["continuation"] = cont if ok else None
                c["continuation_error"] = None if ok else (o.error or "continuation missing or its answer is wrong")
    triplets = []
    for c in cands:
        if c["continuation"] is None:
            reasons["no_continuation"] += 1
            continue
        p = c["problem"]
        student_answer = xmlformat.parse(c["student_solution"]).answer
        final_only = (
            teacher.rule_based
            and answer_step_is_wrong(p, c["student_steps"], student_answer, c["k"], cfg.correct.missing_step)
        ) or c["k"] > len(c["student_steps"])  # a step missing after the last one: every step is kept
        triplets.append({
            "key": c["key"], "id": c["id"],
            **build_triplet(p, c["student_steps"], student_answer, c["k"], c["cause"], c["correction"],
                            c["continuation"], settings.mix_with, final_only),
        })  # fmt: skip
    if not triplets:
        write_jsonl(st.dir / "triplets.jsonl", [])
        raise UserError(
            f"lema-data: no correction triplets from {len(corrections)} corrections (dropped: {dict(reasons)}); "
            "the student needs wrong solutions the teacher can locate and correct (raise sample.k or data sizes)"
        )

    # 3. Held-out problems (never trained on, by any variant) for the sense-of-error measure.
    rng = random.Random(cfg.seed)
    ids = sorted({t["id"] for t in triplets})
    rng.shuffle(ids)
    n_held = round(settings.heldout * len(ids)) if len(ids) > 1 else 0
    held_ids = set(ids[:n_held])
    held = [t for t in triplets if t["id"] in held_ids]
    train_trip = [t for t in triplets if t["id"] not in held_ids]
    if not train_trip:
        raise UserError(f"lema-data: all {len(triplets)} triplets are held out; lower lema.heldout")

    # 4. Base rows: solutions of the training problems (those whose templates were kept), held-out ids excluded.
    def base_row(pid: str) -> dict | None:
        if settings.mix_with == "ht":
            t = templates.get(pid)
            return None if t is None else {"id": pid, "prompt": t["prompt"], "completion": t["completion"]}
        return {"id": pid, "prompt": solve_prompt(train[pid].question, "cot"), "completion": cot_solution(train[pid])}

    base_pool = [r for pid in templates if pid in train and pid not in held_ids and (r := base_row(pid))]
    shuffled = rng.sample(base_pool, len(base_pool))
    want = len(shuffled) if settings.mix_ratio is None else round(settings.mix_ratio * len(train_trip))
    base = [shuffled[i % len(shuffled)] for i in range(want)] if shuffled else []  # repeats when the pool is short

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    # 5. Equal-token variants: the triplets' completion tokens are the budget.
    trip_rows = [{"id": t["id"], "prompt": t["prompt"], "completion": t["completion"]} for t in train_trip]
    budget = sum(n_tokens(r["completion"]) for r in trip_rows)
    corrected_pool = [{"id": t["id"], "prompt": t["solve_prompt"], "completion": t["corrected"]} for t in train_trip]
    plain_pool = []  # the reference solution of each triplet problem, in the base rows' format
    for t in train_trip:
        row = base_row(t["id"]) if t["id"] in train else None
        ref = sampled[t["id"]]
        if row is None and ref.steps:  # not a training problem with a kept template: its reference steps
            steps = with_answer([s.text for s in ref.steps], ref.answer)
            row = {"id": t["id"], "prompt": t["solve_prompt"],
                   "completion": solution_text(steps, ref.answer, settings.mix_with)}  # fmt: skip
        if row is not None:
            plain_pool.append(row)
    corrected, corrected_tokens = fill_to_budget(
        corrected_pool, [n_tokens(r["completion"]) for r in corrected_pool], budget, random.Random(cfg.seed + 1)
    )
    plain, plain_tokens = fill_to_budget(
        plain_pool, [n_tokens(r["completion"]) for r in plain_pool], budget, random.Random(cfg.seed + 2)
    )

    def mixed(added: list[dict], salt: int) -> list[dict]:
        rows = [{**r, "kind": "base"} for r in base] + [{**r, "kind": "added"} for r in added]
        random.Random(cfg.seed + salt).shuffle(rows)
        return rows

    sets = {"lema": mixed(trip_rows, 10), "lema-corrected": mixed(corrected, 11), "lema-plain": mixed(plain, 12)}
    for name, rows in sets.items():
        write_jsonl(st.dir / f"train_{name}.jsonl", rows)
    write_jsonl(st.dir / "triplets.jsonl", triplets)
    write_jsonl(st.dir / "heldout.jsonl", held)
    smallest = {
        "lema-corrected": min((n_tokens(r["completion"]) for r in corrected_pool), default=0),
        "lema-plain": min((n_tokens(r["completion"]) for r in plain_pool), default=0),
    }
    counts = {
        "corrections": len(corrections),
        "triplets": len(triplets),
        "triplets_train": len(train_trip),
        "triplets_heldout": len(held),
        "dropped_by_reason": dict(reasons),
        "mix_with": settings.mix_with,
        "base_rows": len(base),
        "mix_ratio_actual": round(len(base) / len(train_trip), 3),
        "added_rows": {"lema": len(trip_rows), "lema-corrected": len(corrected), "lema-plain": len(plain)},
        "budget": {
            "tokens": budget,
            "lema-corrected": corrected_tokens,
            "lema-plain": plain_tokens,
            "tolerance": "each variant is <= the triplets' tokens and short by less than its pool's shortest row",
            "shortest_row": smallest,
        },
        "base_tokens": sum(n_tokens(r["completion"]) for r in base),
        "teacher": asked.to_dict() if asked else None,
    }
    print(
        f"[lema-data] {len(triplets)} triplets ({len(held)} held out), {len(base)} base rows; added completion "
        f"tokens: triplets {budget}, corrected {corrected_tokens}, plain {plain_tokens}",
        flush=True,
    )
    if asked is not None:
        teacher_check.enforce(cfg, "lema-data", asked, st.dir / "triplets.jsonl")
    return st.finish(counts, teacher=teacher.describe(), teacher_usage=teacher.usage())


STAGE = StageDef("lema-data", "LEMA: correction triplets and the equal-token ablation's training sets", stage, run)
