"""Stage `recipe-table`: one table over every recipe run in this folder, on the same problems, student and teacher.

A recipe counts as run when every one of its stages (but the report) has a manifest here. Its row gives, for each
model it trains and each evaluation set, the greedy accuracy with its interval (the run's `stats:` block: Wilson by
default), and what it cost as if run alone: the seconds of its stages, the teacher's prompt + completion tokens, the
student's generated tokens for training data (`sample`, ELAD's selection, REER's search; evaluation tokens are
counted apart) and the tokens its SFT stages trained on (tokens per epoch x epochs). Stages shared by several
recipes (templates, hsft, ...) are counted in each.

Why the paired tests too: at these sizes two recipes' accuracies differ by a few problems, and side-by-side
intervals overlap even when one model is better on the same problems. So each trained model is tested against the
base student, and against the controls its recipe declares (`Recipe.controls`: the ablation its paper's claim
rests on, e.g. LEMA's triplets vs more plain solutions), on the problems both answered: the difference in points,
its paired-bootstrap interval, the discordant counts and the exact McNemar p. The numbers come from the per-problem
rows the eval stages wrote (`compare.load_outcomes`) and the same functions as the run report; nothing is
recomputed with a model. Cheap: always redone, like the report.
"""

from __future__ import annotations

from typing import Any

from .. import stats
from ..compare import Outcomes, Settings, interval_cell, load_outcomes, pct
from ..config import RunConfig
from ..io import read_json, write_json
from ..recipes.registry import RECIPES
from ..report import accuracy_intervals, markdown_table
from . import Stage, evaluate
from .common import StageDef

BASE = "base"  # the untrained student (`eval-base`), which every recipe evaluates and every trained model must beat


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "recipe-table")


def _folder(cfg: RunConfig, name: str) -> str:
    """The folder a recipe's stage writes: its name, except that an eval stage run with the CoT prompt
    (`evaluate.prompt: cot`, as the lema and reer configs do) writes `eval-<tag>-cot`."""
    if name.startswith("eval-") and not name.endswith("-cot"):
        return evaluate.stage(cfg, name.removeprefix("eval-")).name
    return name


def _manifest(cfg: RunConfig, name: str) -> dict | None:
    path = Stage(cfg, _folder(cfg, name)).manifest_path
    return read_json(path) if path.exists() else None


def _interval_json(iv: stats.Interval | None) -> dict | None:
    return None if iv is None else {"low": iv.low, "high": iv.high, "level": iv.level, "method": iv.method}


def _with_intervals(evals: dict[str, dict], outcomes: Outcomes, settings: Settings) -> dict[str, dict]:
    """{model: {set: summary + "interval"}}: the eval summaries with the report's accuracy intervals (from the
    per-problem rows; Wilson from the summary's counts when the rows are missing; None when neither is possible)."""
    ivs = accuracy_intervals(evals, outcomes, settings)
    return {tag: {s: {**summ, "interval": _interval_json(ivs.get((tag, s)))} for s, summ in sets.items()}
            for tag, sets in evals.items()}  # fmt: skip


def paired_rows(outcomes: Outcomes, settings: Settings, pairs: list[tuple[str, str, str]]) -> list[dict]:
    """One dict per (model, reference, kind) and set both were graded on problem by problem: model minus reference."""
    out = []
    for a, b, kind in pairs:
        for s in sorted(set(outcomes.get(a, {})) & set(outcomes.get(b, {}))):
            pc = settings.paired(outcomes[a][s], outcomes[b][s])
            if not pc.n:
                continue
            out.append({"model": a, "vs": b, "kind": kind, "set": s, "pairs": pc.n, "model_accuracy": pc.a_accuracy,
                        "vs_accuracy": pc.b_accuracy, "diff": pc.diff, "diff_interval": _interval_json(pc.interval),
                        "model_only": pc.a_only, "vs_only": pc.b_only, "mcnemar_p": pc.p_value,
                        "unmatched": pc.unmatched})  # fmt: skip
    return out


def generated_for_training(stage_name: str, counts: dict) -> int:
    """The student tokens a stage generated to make training data: every `*new_tokens` count of a stage that is
    not an evaluation (`sample`: new_tokens; `elad-select`: inter_ and intra_new_tokens; `reer-search`:
    student_new_tokens). Evaluation tokens are counted apart."""
    if stage_name.startswith("eval-"):
        return 0
    return sum(int(v) for k, v in counts.items() if k.endswith("new_tokens") and isinstance(v, int | float))


def recipe_row(cfg: RunConfig, recipe: str, outcomes: Outcomes | None = None,
               settings: Settings | None = None) -> dict | None:  # fmt: skip
    """The recipe's row, or None when one of its stages has not finished here."""
    outcomes = load_outcomes(cfg.run_dir) if outcomes is None else outcomes
    settings = Settings.of(cfg) if settings is None else settings
    names = [s for s in RECIPES[recipe].stages if s not in ("report", "recipe-table")]
    mans = {s: _manifest(cfg, s) for s in names}
    if not names or any(m is None for m in mans.values()):
        return None
    teacher = student_gen = trained = evaluated = 0
    evals: dict[str, dict] = {}
    for s, m in mans.items():
        u = m.get("teacher_usage") or {}
        teacher += (u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0)
        counts = m.get("counts") or {}
        student_gen += generated_for_training(s, counts)
        if s.startswith("eval-"):
            evaluated += counts.get("new_tokens") or 0
            evals[_folder(cfg, s).removeprefix("eval-")] = m.get("summary") or {}  # the key load_outcomes uses
        metrics = m.get("metrics") or {}
        if metrics.get("tokens_per_epoch"):
            trained += int(metrics["tokens_per_epoch"] * cfg.hsft.epochs)
    accuracy = _with_intervals(evals, outcomes, settings)
    base = _folder(cfg, f"eval-{BASE}").removeprefix("eval-")  # `base-cot` when evaluated with the CoT prompt
    models = [t for t in accuracy if t != base]
    pairs = [(t, base, "base") for t in models if base in accuracy]
    tag = {t: _folder(cfg, f"eval-{t}").removeprefix("eval-") for ab in RECIPES[recipe].controls for t in ab}
    pairs += [(tag[a], tag[b], "control") for a, b in RECIPES[recipe].controls
              if tag[a] in accuracy and tag[b] in accuracy]  # fmt: skip
    return {
        "recipe": recipe,
        "stages": len(names),
        "seconds": round(sum(m.get("seconds") or 0 for m in mans.values()), 1),
        "teacher_tokens": teacher,
        "student_generated_tokens": student_gen,
        "student_trained_tokens": trained,
        "eval_generated_tokens": evaluated,
        "base": accuracy.get(base, {}),
        "accuracy": {t: accuracy[t] for t in models},
        "paired": paired_rows(outcomes, settings, pairs),
    }


def _iv(d: dict, signed: bool = False) -> str:
    return interval_cell(stats.Interval(d["low"], d["high"], d["level"], d["method"]), signed=signed)


def accuracy_cell(summ: dict) -> str:
    """`12.5 [3.5, 36.0] (n=16)`; `skipped` for a set the stage skipped."""
    if "skipped" in summ:
        return "skipped"
    iv = f" {_iv(summ['interval'])}" if summ.get("interval") else ""
    return f"{pct(summ.get('greedy_accuracy'))}{iv} (n={summ.get('problems')})"


def table(rows: list[dict], level: str = "95%") -> str:
    head = ["recipe", f"models: greedy % [{level} CI] (n) per set", "seconds", "teacher tokens",
            "student generated tokens", "student trained tokens"]  # fmt: skip
    body = []
    for r in rows:
        accs = [f"{model} {s}: {accuracy_cell(summ)}" for model, sets in r["accuracy"].items() for s, summ in sets.items()]
        body.append([r["recipe"], "; ".join(accs) or "-", str(r["seconds"]), str(r["teacher_tokens"]),
                     str(r["student_generated_tokens"]), str(r["student_trained_tokens"])])  # fmt: skip
    return markdown_table(head, body)


def paired_table(rows: list[dict], level: str = "95%") -> str:
    head = ["recipe", "model", "vs", "set", "pairs", "model %", "vs %", "difference (points)",
            f"{level} CI (paired bootstrap)", "model only right", "vs only right", "McNemar exact p"]  # fmt: skip
    body = [[r["recipe"], p["model"], p["vs"] + (" (control)" if p["kind"] == "control" else ""), p["set"],
             str(p["pairs"]), pct(p["model_accuracy"]), pct(p["vs_accuracy"]), f"{100 * p['diff']:+.1f}",
             _iv(p["diff_interval"], signed=True), str(p["model_only"]), str(p["vs_only"]),
             stats.format_p(p["mcnemar_p"])]
            for r in rows for p in r["paired"]]  # fmt: skip
    return markdown_table(head, body)


def markdown(rows: list[dict], settings: Settings) -> str:
    method = "Wilson score" if settings.interval == "wilson" else "percentile bootstrap"
    parts = ["## Recipes compared (same problems, student and teacher)\n",
             "Each recipe's cost as if run alone (shared stages counted in each); greedy accuracy of every model it "
             f"trains with a {settings.pct} {method} interval.\n"]  # fmt: skip
    base: dict[str, Any] = next((r["base"] for r in rows if r["base"]), {})
    if base:
        parts.append("Base student (`eval-base`, shared by every recipe): "
                     + "; ".join(f"{s}: {accuracy_cell(summ)}" for s, summ in base.items()) + "\n")  # fmt: skip
    parts.append(table(rows, settings.pct) + "\n")
    if any(r["paired"] for r in rows):
        parts += ["### Each trained model against the base student and its recipe's controls (paired)\n",
                  "Difference = model minus *vs* on the problems both answered, with a paired percentile bootstrap "
                  f"interval ({settings.bootstrap_samples} resamples, seed {settings.bootstrap_seed}) and the exact "
                  "McNemar p-value (two-sided binomial test on the problems only one of the two got right). "
                  "*(control)*: the ablation the recipe's claim must beat (`Recipe.controls`).\n",
                  paired_table(rows, settings.pct) + "\n"]  # fmt: skip
    return "\n".join(parts)


def run(cfg: RunConfig) -> dict:
    st = stage(cfg).start()
    settings = Settings.of(cfg)
    outcomes = load_outcomes(cfg.run_dir)
    rows = [r for name in RECIPES if name != "compare-recipes"
            and (r := recipe_row(cfg, name, outcomes, settings)) is not None]  # fmt: skip
    write_json(st.dir / "recipe_table.json", rows)
    md = markdown(rows, settings)
    print(md)
    return st.finish({"recipes": [r["recipe"] for r in rows]}, report_section=md)


STAGE = StageDef("recipe-table", "one table over the recipes run in this folder: accuracy with intervals and paired "
                 "tests, tokens, time", stage, run, always=True)  # fmt: skip
