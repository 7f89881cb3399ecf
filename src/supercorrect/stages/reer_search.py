"""Stage `reer-search` (REER): for each (problem x, known good solution y), search a thinking trajectory z that
raises the clipped mean log-prob of y given (x, z) under the base student (`reer.py` has the score and the
keep-only-if-better step).

- y: the reference solution as plain text ending in \\boxed{answer} (the CoT SFT baseline's target).
- Draft z: the student's own sampled thinking (`reer_draft` prompt), batched.
- Scoring context: the CoT prompt with x, then z, then y: exactly what the SFT stages train on.
- Search: `reer.high_steps` steps; step t rewrites segment t mod (segments) of every problem with
  `reer.candidates` student proposals; the trajectories after 0 (the draft), `low_steps` and `high_steps` steps
  are kept for the SFT stages.
- Leakage: ROUGE-L and n-gram containment between z and y, and whether z states the final answer; trajectories
  with ROUGE-L above `reer.leak_threshold` are flagged (and left out of the SFT data with `reject_leaky`).

Resumable: drafts and each step's proposals are generated through resumable shards, and the search state is
saved after every step; a killed run continues from the last finished step. Writes `trajectories.jsonl`.
"""

from __future__ import annotations

import json

from .. import prompts
from ..config import RunConfig
from ..data import load_problems
from ..errors import UserError
from ..generation import SamplingSettings, generate_resumable, make_backend
from ..io import atomic_write_text, write_jsonl
from ..models import chat_prompt
from ..reer import Scorer, SearchState, first_sentence, join_segments, refine_step, split_segments
from ..textsim import ngram_containment, quantiles, rouge_l, tokens
from ..uncertainty import canonical_answer
from . import Stage
from .common import StageDef, model_path
from .cot_sft import cot_solution

BUDGETS = ("draft", "low", "high")


def stage(cfg: RunConfig) -> Stage:
    spec = cfg.data.get(cfg.reer.data)
    return Stage(
        cfg, "reer-search", sections=("student", "reer"), extra={"data": spec.fingerprint() if spec else None}
    )


def steps_of(cfg: RunConfig) -> dict[str, int]:
    return {"draft": 0, "low": cfg.reer.low_steps, "high": cfg.reer.high_steps}


def context(tokenizer, question: str, z: str) -> str:
    """What y is scored after (and what the SFT stages train on): CoT prompt with x, then z."""
    return chat_prompt(tokenizer, prompts.render("cot", problem=question)) + z + "\n\n"


def leakage(z: str, y: str, answer: str, n: int) -> dict:
    ans = canonical_answer(f"<Answer>{answer}</Answer>")
    return {"rouge_l": round(rouge_l(z, y), 4), "ngram": round(ngram_containment(z, y, n), 4),
            "answer_in_z": ans in tokens(z)}  # fmt: skip


def run(cfg: RunConfig) -> dict:
    r = cfg.reer
    if r.data not in cfg.data:
        raise UserError(f"reer.data: no data set named {r.data!r} (have: {', '.join(cfg.data)})")
    if cfg.generation.backend != "transformers":
        raise UserError("reer-search scores with the transformers model: set generation.backend: transformers")
    st = stage(cfg)
    path = model_path(cfg, "base")
    st.start()
    problems = load_problems(cfg.data[r.data], cfg.base_dir)
    by_id = {p.id: p for p in problems}
    targets = {p.id: cot_solution(p) for p in problems}
    backend = make_backend("transformers", path, cfg.student.dtype, cfg.generation.batch_size)
    tok = backend.tokenizer
    scorer = Scorer(backend.model, tok, r.score_batch_size)
    heads = {p.id: chat_prompt(tok, prompts.render("reer_draft", problem=p.question)) for p in problems}
    new_tokens = 0
    try:
        draft_settings = SamplingSettings(temperature=r.draft_temperature, max_new_tokens=r.draft_max_new_tokens,
                                          seed=cfg.seed + 13)  # fmt: skip
        drafts, stats = generate_resumable(backend, [(p.id, heads[p.id]) for p in problems], draft_settings,
                                           st.dir / "drafts.shard.jsonl", desc="reer drafts")  # fmt: skip
        new_tokens += stats["new_tokens"]

        def score(pairs: list[tuple[SearchState, str]]) -> list[float]:
            return scorer.score([(context(tok, by_id[s.key].question, z), targets[s.key]) for s, z in pairs])

        state_file = st.dir / "state.json"
        snapshots: dict[str, dict[str, str]] = {}
        if state_file.exists():  # resume after the last finished step
            saved = json.loads(state_file.read_text())
            states = [SearchState(**s) for s in saved["states"]]
            done_steps, snapshots = saved["steps_done"], saved["snapshots"]
        else:
            states = [SearchState(p.id, split_segments(drafts[p.id][0]["text"], r.max_segments), 0.0)
                      for p in problems]  # fmt: skip
            for s, sc in zip(states, score([(s, s.z) for s in states]), strict=True):
                s.score = s.initial = sc
            done_steps = 0
            snapshots["draft"] = {s.key: s.z for s in states}

        for t in range(done_steps, r.high_steps):
            def propose(items: list[tuple[SearchState, int]], t: int = t) -> list[list[str]]:
                nonlocal new_tokens
                reqs = [(f"{s.key}#{t}", heads[s.key] + join_segments(s.segments[:j]) + (" " if j else ""))
                        for s, j in items]  # fmt: skip
                settings = SamplingSettings(n=r.candidates, temperature=r.candidate_temperature,
                                            max_new_tokens=r.segment_max_new_tokens, stop=("\n",),
                                            seed=cfg.seed + 1000 + t)  # fmt: skip
                gens, gstats = generate_resumable(backend, reqs, settings, st.dir / f"step{t}.shard.jsonl")
                new_tokens += gstats["new_tokens"]
                return [[first_sentence(c["text"]) for c in gens[k]] for k, _ in reqs]

            accepted = refine_step(states, t, propose, score, r.threshold)
            print(f"[reer-search] step {t + 1}/{r.high_steps}: {accepted} rewrites kept", flush=True)
            for name, n in steps_of(cfg).items():
                if n == t + 1:
                    snapshots[name] = {s.key: s.z for s in states}
            atomic_write_text(state_file, json.dumps({"steps_done": t + 1, "snapshots": snapshots,
                                                      "states": [vars(s) for s in states]}))  # fmt: skip
    finally:
        backend.close()

    # Each snapshot's score from the search history (the search keeps the running best, so it is exact).
    rows = []
    keyed = {s.key: s for s in states}
    for p in problems:
        rows.append({"id": p.id, "y": targets[p.id], "answer": p.answer, "history": keyed[p.id].history})
    for row in rows:
        for name, n in steps_of(cfg).items():
            z = snapshots.get(name, {}).get(row["id"], keyed[row["id"]].z)
            sc = keyed[row["id"]].score_after(n)
            row[name] = {"z": z, "score": sc, **leakage(z, row["y"], row["answer"], r.leak_ngram)}
            row[name]["flagged"] = row[name]["rouge_l"] > r.leak_threshold
    summary = {}
    draft_scores = [row["draft"]["score"] for row in rows]
    for name, n in steps_of(cfg).items():
        vals = [row[name] for row in rows]
        gains = [v["score"] - d for v, d in zip(vals, draft_scores, strict=True)]
        summary[name] = {
            "steps": n,
            "mean_score": round(sum(v["score"] for v in vals) / len(vals), 5),
            "mean_gain": round(sum(gains) / len(gains), 5),
            "improved": sum(1 for g in gains if g > 0),
            "rouge_l": quantiles([v["rouge_l"] for v in vals]),
            "ngram": quantiles([v["ngram"] for v in vals]),
            "answer_in_z": sum(v["answer_in_z"] for v in vals),
            "flagged": sum(v["flagged"] for v in vals),
        }
    write_jsonl(st.dir / "trajectories.jsonl", rows)
    counts = {"problems": len(rows), "student_new_tokens": new_tokens, "tokens_scored": scorer.tokens_scored}
    for name, v in summary.items():
        print(f"[reer-search] {name} ({v['steps']} steps): mean score {v['mean_score']}, gain {v['mean_gain']}, "
              f"ROUGE-L median {v['rouge_l'].get('p50')}, flagged {v['flagged']}/{len(rows)}", flush=True)
    return st.finish(counts, summary=summary)


STAGE = StageDef("reer-search", "REER: search thinking trajectories that make the known solution likely", stage, run)
