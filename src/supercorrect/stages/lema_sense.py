"""Stage `lema-sense`: LEMA's "sense of error" and the ablation table.

Sense of error: for problems with a wrong student solution and its corrected version (same format, same prompt),
the mean token NLL of each under a model; the gap (wrong minus corrected, per problem, averaged) says how much
more the model is surprised by the wrong one. Measured under the base student and under each of the three trained
arms, on the held-out triplet problems (never trained on by any arm) and on the training ones. Perplexity =
exp(mean NLL). Then one table: per arm, the added rows and completion tokens, held-out accuracy (greedy, with n),
and the held-out sense-of-error gap; it goes into the run's report.
"""

from __future__ import annotations

import math

from ..config import RunConfig
from ..io import read_json, read_jsonl, write_json
from ..metrics import mean
from ..scoring import completion_nll_at
from . import Stage
from . import evaluate as ev
from .common import StageDef, model_path

ARMS = ("lema", "lema-corrected", "lema-plain")
LABELS = {
    "base": "base (before training)",
    "lema": "triplets (LEMA)",
    "lema-corrected": "corrected solutions alone",
    "lema-plain": "more plain solutions",
}


def eval_name(cfg: RunConfig, tag: str) -> str:
    """The folder of a model's evaluation (`eval-lema`, or `eval-lema-cot` with the CoT prompt)."""
    return ev.stage(cfg, tag).name


def stage(cfg: RunConfig) -> Stage:
    return Stage(
        cfg, "lema-sense", sections=("lema", "evaluate"),
        inputs=("lema-data", *ARMS, *(eval_name(cfg, a) for a in ARMS)),
    )  # fmt: skip


def sense(nll_wrong: list[float], nll_correct: list[float]) -> dict:
    pairs = [(w, c) for w, c in zip(nll_wrong, nll_correct, strict=True) if not (math.isnan(w) or math.isnan(c))]
    if not pairs:
        return {"n": 0}
    mw, mc = mean(w for w, _ in pairs), mean(c for _, c in pairs)
    return {
        "n": len(pairs),
        "nll_wrong": round(mw, 4),
        "nll_correct": round(mc, 4),
        "nll_gap": round(mean(w - c for w, c in pairs), 4),
        "ppl_wrong": round(math.exp(mw), 3),
        "ppl_correct": round(math.exp(mc), 3),
        "ppl_gap": round(math.exp(mw) - math.exp(mc), 3),
        "share_wrong_more_perplexing": round(mean(float(w > c) for w, c in pairs), 3),
    }


def _f(x, fmt: str = "{:+.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def table(result: dict, data_counts: dict, evals: dict) -> str:
    sets = list(evals.get("base", {}) or next(iter(evals.values()), {}))
    head = ["arm", "added rows", "added tokens", *[f"{s} greedy % (n)" for s in sets],
            "held-out NLL gap (wrong - corrected)", "held-out PPL wrong / corrected", "train NLL gap"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    budget = data_counts.get("budget", {})
    for tag in ("base", *ARMS):
        held, tr = result[tag].get("heldout", {}), result[tag].get("train", {})
        added = data_counts.get("added_rows", {}).get(tag, "-")
        tokens = budget.get("tokens") if tag == "lema" else budget.get(tag, "-")
        accs = []
        for s in sets:
            summ = evals.get(tag, {}).get(s, {})
            acc = summ.get("greedy_accuracy")
            accs.append("skipped" if "skipped" in summ else f"{_f(acc and 100 * acc, '{:.1f}')} (n={summ.get('problems')})")
        ppl = f"{held['ppl_wrong']} / {held['ppl_correct']}" if held.get("n") else "-"
        lines.append("| " + " | ".join([
            LABELS[tag], str(added if tag != "base" else "-"), str(tokens if tag != "base" else "-"), *accs,
            f"{_f(held.get('nll_gap'))} (n={held.get('n', 0)})", ppl, f"{_f(tr.get('nll_gap'))} (n={tr.get('n', 0)})",
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    data_dir = cfg.run_dir / "lema-data"
    data_counts = st.upstream("lema-data")["counts"]
    base_eval = cfg.run_dir / eval_name(cfg, "base") / "manifest.json"
    evals = {"base": read_json(base_eval).get("summary", {}) if base_eval.exists() else {}}
    for a in ARMS:
        evals[a] = st.upstream(eval_name(cfg, a)).get("summary", {})
    st.start()
    n = cfg.lema.sense_max
    sets = {"heldout": read_jsonl(data_dir / "heldout.jsonl")[:n]}
    held_ids = {t["id"] for t in sets["heldout"]}
    sets["train"] = [t for t in read_jsonl(data_dir / "triplets.jsonl") if t["id"] not in held_ids][:n]
    result: dict[str, dict] = {}
    for tag in ("base", *ARMS):
        path = model_path(cfg, tag)
        texts = [(t["solve_prompt"], t[kind]) for s in sets.values() for t in s for kind in ("wrong", "corrected")]
        nll = completion_nll_at(path, texts, cfg.student.dtype, cfg.lema.nll_batch_size) if texts else []
        result[tag], i = {}, 0
        for name, rows in sets.items():
            part = nll[i : i + 2 * len(rows)]
            i += 2 * len(rows)
            result[tag][name] = sense(part[0::2], part[1::2])
        print(f"[lema-sense] {tag}: held-out NLL gap {result[tag]['heldout'].get('nll_gap')}", flush=True)
    write_json(st.dir / "sense.json", result)
    md = (
        "## LEMA: error signal or one more solution?\n\n"
        f"Every arm trains the base student on the same {data_counts.get('base_rows')} {data_counts.get('mix_with')} "
        "solution rows plus its added rows at (at most) the triplets' completion tokens. *NLL gap*: mean token "
        "NLL of the student's wrong solution minus that of its corrected version, per problem, averaged "
        "(LEMA's sense of error; larger = the model finds wrong solutions more surprising). Held-out problems "
        "were kept out of every arm's training data.\n\n" + table(result, data_counts, evals) + "\n"
    )
    return st.finish(
        {"heldout": len(sets["heldout"]), "train": len(sets["train"])}, sense=result, report_section=md
    )


STAGE = StageDef("lema-sense", "LEMA: sense of error (perplexity gap) before/after, and the ablation table", stage, run)
