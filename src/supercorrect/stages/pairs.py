"""Stage `pairs`: build Cross-DPO preference pairs (see `supercorrect.pair_builder`) from the located corrections.

Keeps only pairs whose teacher correction leads to the right final answer. The `pairs:` config section says
which pairs (context, chosen form; `both` builds each option for every row). Writes `pairs.jsonl` (id, prompt,
chosen, rejected, step, context, chosen_form, and the key of the correction row; loadable with
`datasets.load_dataset("json", ...)`) and reports the prefix:completion token ratio, which is what makes
shared-prefix training pay.
"""

from __future__ import annotations

from collections import Counter

from .. import prompts
from ..config import PairsConfig, RunConfig
from ..data import load_problems
from ..io import read_jsonl, write_jsonl
from ..metrics import mean
from ..models import chat_prompt, load_tokenizer
from ..pair_builder import build_pair, variant_id, variants
from . import Stage
from .common import StageDef, model_path
from .correct import correction_context, unusable_reason


def stage(cfg: RunConfig) -> Stage:
    # The paper's pairs (the section's defaults) hash as before the section existed: finished runs are not redone.
    sections = ("pairs",) if cfg.pairs != PairsConfig() else ()
    return Stage(cfg, "pairs", sections=sections, inputs=("correct",))


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("correct")
    rows = read_jsonl(cfg.run_dir / "correct" / "corrections.jsonl")
    st.start()
    tok = load_tokenizer(model_path(cfg, "hsft"))
    problems = {p.id: p for p in load_problems(cfg.data[cfg.sample.data], cfg.base_dir)}
    kinds = variants(cfg.pairs.context, cfg.pairs.chosen)
    specials = [t for t in tok.all_special_tokens if t]
    # Counted once per variant tried: pairs + dropped = corrections x variants.
    pairs, reasons = [], Counter()
    by_variant: dict[str, Counter] = {f"{c}/{f}": Counter() for c, f in kinds}
    for r in rows:
        for context, form in kinds:
            tally = by_variant[f"{context}/{form}"]
            if why := unusable_reason(r):
                reasons[why] += 1
                tally[why] += 1
                continue
            question = problems[r["id"]].question
            head = chat_prompt(tok, prompts.render("ht", problem=question)) if context == "ht" else ""
            pair, why = build_pair(
                variant_id(r["key"], context, form), head, r["student_solution"], r["teacher_trace"],
                r["student_step_k"], special_tokens=specials, context=context, chosen_form=form,
                correction_context=lambda k, q=question, s=r["student_steps"]: correction_context(tok, q, s, k),
                step_fix=r.get("teacher_step_fix"),
            )  # fmt: skip
            if pair is None:
                reasons[why] += 1
                tally[why] += 1
                continue
            tally["pairs"] += 1
            pairs.append({**pair.to_row(), "key": r["key"]})  # the correction row it comes from

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
        "context": cfg.pairs.context,
        "chosen": cfg.pairs.chosen,
        # per variant ("context/chosen_form"; ht/cause_correction is the paper's): pairs built, drops by reason
        "by_variant": {name: dict(c) for name, c in by_variant.items()},
        "mean_prefix_tokens": round(mean(prefix), 1),
        "mean_completion_tokens": round(mean(completion), 1),
        "prefix_to_completion_ratio": None if ratio is None else round(ratio, 2),
    }
    print(f"[pairs] {len(pairs)} pairs; prefix:completion token ratio {counts['prefix_to_completion_ratio']}")
    return st.finish(counts)


STAGE = StageDef("pairs", "build Cross-DPO preference pairs (prefix continued, one-step completions)", stage, run)
