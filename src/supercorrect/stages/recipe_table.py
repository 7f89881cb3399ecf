"""Stage `recipe-table`: one table over every recipe run in this folder, on the same problems, student and teacher.

A recipe counts as run when every one of its stages (but the report) has a manifest here. Its row gives the
greedy accuracy (with n) of each model it trains, and what it cost as if run alone: the seconds of its stages,
the teacher's prompt + completion tokens, the student's generated tokens for training data (the `sample` stage;
evaluation tokens are counted apart) and the tokens its SFT stages trained on (tokens per epoch x epochs).
Stages shared by several recipes (templates, hsft, ...) are counted in each. Cheap: always redone, like the report.
"""

from __future__ import annotations

from ..config import RunConfig
from ..io import read_json, write_json
from ..recipes.registry import RECIPES
from . import Stage
from .common import StageDef


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "recipe-table")


def _manifest(cfg: RunConfig, name: str) -> dict | None:
    path = Stage(cfg, name).manifest_path  # every stage's folder is <run_dir>/<stage name>
    return read_json(path) if path.exists() else None


def recipe_row(cfg: RunConfig, recipe: str) -> dict | None:
    names = [s for s in RECIPES[recipe].stages if s not in ("report", "recipe-table")]
    mans = {s: _manifest(cfg, s) for s in names}
    if not names or any(m is None for m in mans.values()):
        return None
    teacher = student_gen = trained = evaluated = 0
    accuracy: dict[str, dict] = {}
    for s, m in mans.items():
        u = m.get("teacher_usage") or {}
        teacher += (u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0)
        counts = m.get("counts") or {}
        if s == "sample":
            student_gen += counts.get("new_tokens") or 0
        if s.startswith("eval-"):
            evaluated += counts.get("new_tokens") or 0
            if s != "eval-base":
                accuracy[s.removeprefix("eval-")] = m.get("summary") or {}
        metrics = m.get("metrics") or {}
        if metrics.get("tokens_per_epoch"):
            trained += int(metrics["tokens_per_epoch"] * cfg.hsft.epochs)
    return {
        "recipe": recipe,
        "stages": len(names),
        "seconds": round(sum(m.get("seconds") or 0 for m in mans.values()), 1),
        "teacher_tokens": teacher,
        "student_generated_tokens": student_gen,
        "student_trained_tokens": trained,
        "eval_generated_tokens": evaluated,
        "accuracy": accuracy,
    }


def table(rows: list[dict]) -> str:
    head = ["recipe", "models: greedy % (n) per set", "seconds", "teacher tokens", "student generated tokens",
            "student trained tokens"]  # fmt: skip
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        accs = []
        for model, sets in r["accuracy"].items():
            for s, summ in sets.items():
                acc = summ.get("greedy_accuracy")
                shown = "skipped" if "skipped" in summ else f"{100 * acc:.1f} (n={summ.get('problems')})"
                accs.append(f"{model} {s}: {shown}")
        out.append(f"| {r['recipe']} | {'; '.join(accs) or '-'} | {r['seconds']} | {r['teacher_tokens']} | "
                   f"{r['student_generated_tokens']} | {r['student_trained_tokens']} |")  # fmt: skip
    return "\n".join(out)


def run(cfg: RunConfig) -> dict:
    st = stage(cfg).start()
    rows = [r for name in RECIPES if name != "compare-recipes" and (r := recipe_row(cfg, name)) is not None]
    write_json(st.dir / "recipe_table.json", rows)
    md = (
        "## Recipes compared (same problems, student and teacher)\n\n"
        "Each recipe's cost as if run alone (shared stages counted in each); accuracy of every model it trains.\n\n"
        + table(rows) + "\n"
    )
    print(md)
    return st.finish({"recipes": [r["recipe"] for r in rows]}, report_section=md)


STAGE = StageDef("recipe-table", "one table over the recipes run in this folder: accuracy, tokens, time", stage, run,
                 always=True)  # fmt: skip
