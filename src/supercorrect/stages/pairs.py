"""Stage `pairs`: build Cross-DPO preference pairs (see `supercorrect.pair_builder`) from the located corrections.

Keeps only pairs whose teacher correction leads to the right final answer. Writes `pairs.jsonl` (prompt,
chosen, rejected, step; loadable with `datasets.load_dataset("json", ...)`) and reports the prefix:completion
token ratio, which is what makes shared-prefix training pay.
"""

from __future__ import annotations

from collections import Counter

from .. import prompts
from ..config import RunConfig
from ..data import load_problems
from ..io import read_jsonl, write_jsonl
from ..metrics import mean
from ..models import chat_prompt, load_tokenizer
from ..pair_builder import build_pair
from . import Stage
from .common import StageDef, model_path
from .correct import unusable_reason


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "pairs", inputs=("correct",))


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("correct")
    rows = read_jsonl(cfg.run_dir / "correct" / "corrections.jsonl")
    st.start()
    tok = load_tokenizer(model_path(cfg, "hsft"))
    problems = {p.id: p for p in load_problems(cfg.data[cfg.sample.data], cfg.base_dir)}
    pairs, reasons = [], Counter()
    for r in rows:
        if why := unusable_reason(r):
            reasons[why] += 1
            continue
        head = chat_prompt(tok, prompts.render("ht", problem=problems[r["id"]].question))
        pair, why = build_pair(
            r["key"], head, r["student_solution"], r["teacher_trace"], r["student_step_k"],
            special_tokens=[t for t in tok.all_special_tokens if t],
        )  # fmt: skip
        if pair is None:
            reasons[why] += 1
            continue
        pairs.append(pair.to_row())

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    prefix = [n_tokens(p["prompt"]) for p in pairs]
    completion = [(n_tokens(p["chosen"]) + n_tokens(p["rejected"])) / 2 for p in pairs]
    ratio = mean(prefix) / mean(completion) if pairs else None
    write_jsonl(st.dir / "pairs.jsonl", pairs)
    counts = {
        "corrections": len(rows),
        "pairs": len(pairs),
        "dropped_by_reason": dict(reasons),
        "mean_prefix_tokens": round(mean(prefix), 1),
        "mean_completion_tokens": round(mean(completion), 1),
        "prefix_to_completion_ratio": None if ratio is None else round(ratio, 2),
    }
    print(f"[pairs] {len(pairs)} pairs; prefix:completion token ratio {counts['prefix_to_completion_ratio']}")
    return st.finish(counts)


STAGE = StageDef("pairs", "build Cross-DPO preference pairs (prefix continued, one-step completions)", stage, run)
