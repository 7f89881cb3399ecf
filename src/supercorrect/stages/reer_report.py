"""Stage `reer-report`: REER's two questions, answered from the run.

1. Leakage: the distribution of ROUGE-L and n-gram containment between z and y per search budget, how many
   trajectories state the final answer, and how many are flagged above `reer.leak_threshold`.
2. Does a lower perplexity of y mean better training data? Per budget, the mean score gain over the draft next to
   the accuracy of the student trained on it, and their Pearson correlation across budgets (n = number of
   budgets: three points cannot support a claim; the table says so).
Written to `reer-report/reer.md` and `summary.json`; redone every run.
"""

from __future__ import annotations

import math

from ..config import RunConfig
from ..io import atomic_write_text, read_json, write_json
from . import Stage
from . import evaluate as ev
from .common import StageDef
from .reer_search import BUDGETS


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "reer-report")


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r; None with fewer than 2 points or no variance."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def run(cfg: RunConfig) -> dict:
    st = stage(cfg).start()
    search = read_json(cfg.run_dir / "reer-search" / "manifest.json")
    summary, n_problems = search["summary"], search["counts"]["problems"]
    acc: dict[str, dict] = {}
    for b in BUDGETS:
        m = ev.stage(cfg, f"reer-sft-{b}").manifest_path  # eval-<tag>, or eval-<tag>-cot with the CoT prompt
        acc[b] = read_json(m).get("summary", {}) if m.exists() else {}
    sets = sorted({s for v in acc.values() for s in v})
    lines = [
        "# REER: leakage and whether a lower perplexity makes better training data", "",
        f"{n_problems} (problem, solution) pairs; score = mean log-prob of y given (x, z), each token clipped to "
        f"[-2, 0]; leaky = ROUGE-L(z, y) > {cfg.reer.leak_threshold}.", "",
        "| budget | steps | mean score | mean gain vs draft | improved | ROUGE-L p50 / p90 / max | "
        f"{cfg.reer.leak_ngram}-gram containment p50 / max | states the answer | flagged | "
        + " | ".join(f"{s} accuracy (n)" for s in sets) + " |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(sets),
    ]  # fmt: skip
    for b in BUDGETS:
        v = summary[b]
        cells = []
        for s in sets:
            a = acc[b].get(s, {})
            cells.append("-" if a.get("greedy_accuracy") is None else
                         f"{100 * a['greedy_accuracy']:.1f}% (n={a.get('problems')})")  # fmt: skip
        lines.append(
            f"| {b} | {v['steps']} | {v['mean_score']} | {v['mean_gain']} | {v['improved']}/{n_problems} | "
            f"{v['rouge_l'].get('p50')} / {v['rouge_l'].get('p90')} / {v['rouge_l'].get('p100')} | "
            f"{v['ngram'].get('p50')} / {v['ngram'].get('p100')} | {v['answer_in_z']} | {v['flagged']} | "
            + " | ".join(cells) + " |"
        )
    corr = {}
    for s in sets:
        pts = [(summary[b]["mean_gain"], acc[b][s]["greedy_accuracy"]) for b in BUDGETS
               if acc[b].get(s, {}).get("greedy_accuracy") is not None]  # fmt: skip
        corr[s] = {"r": pearson([p[0] for p in pts], [p[1] for p in pts]), "points": len(pts)}
        r = corr[s]["r"]
        lines.append("")
        lines.append(f"Score gain vs trained accuracy on {s}: Pearson r = {'undefined' if r is None else f'{r:.3f}'} "
                     f"over {len(pts)} budgets (too few points to support a claim either way).")  # fmt: skip
    atomic_write_text(st.dir / "reer.md", "\n".join(lines) + "\n")
    write_json(st.dir / "summary.json", {"search": summary, "accuracy": acc, "correlation": corr})
    print("\n".join(lines))
    return st.finish({"budgets": len(BUDGETS)}, correlation=corr)


STAGE = StageDef("reer-report", "REER: leakage distribution and score gain vs trained accuracy", stage, run,
                 always=True)  # fmt: skip
