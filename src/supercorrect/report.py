"""The run report: Markdown tables and PNG plots gathered from the stages' manifests and summaries.

Written to `<run_dir>/report/report.md` with plots beside it, and the main table printed to the terminal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .config import RunConfig
from .io import atomic_write_text, read_json, write_json
from .stages import Stage
from .stages.common import StageDef

# Display order of evaluated models: the paper's Table 2 ordering, baselines beside what they ablate.
MODEL_ORDER = ["base-cot", "base", "cot-sft", "hsft", "instance-dpo", "cross-dpo"]
LABELS = {
    "base": "base (HT prompt)",
    "base-cot": "base (CoT prompt)",
    "cot-sft": "CoT SFT",
    "hsft": "HSFT",
    "instance-dpo": "HSFT + instance DPO",
    "cross-dpo": "HSFT + Cross-DPO",
}


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "report")


def _evals(run_dir: Path) -> dict[str, dict]:
    """{model tag: {set: summary}} for every finished eval stage."""
    out = {}
    for m in sorted(run_dir.glob("eval-*/manifest.json")):
        tag = m.parent.name.removeprefix("eval-")
        out[tag] = read_json(m).get("summary", {})
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ordered(evals: dict[str, dict]) -> list[str]:
    return sorted(evals, key=lambda t: (MODEL_ORDER.index(t) if t in MODEL_ORDER else 99, t))


def accuracy_table(evals: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    sets = sorted({s for v in evals.values() for s in v})
    header = ["model", *[f"{s} (greedy %)" for s in sets]]
    rows = []
    for tag in _ordered(evals):
        cells = [LABELS.get(tag, tag)]
        for s in sets:
            summ = evals[tag].get(s, {})
            n = summ.get("problems")
            cells.append("skipped" if "skipped" in summ else f"{_pct(summ.get('greedy_accuracy'))} (n={n})")
        rows.append(cells)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows])


def plot_accuracy(evals: dict[str, dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = _ordered(evals)
    sets = sorted({s for v in evals.values() for s in v if "skipped" not in v[s]})
    if not tags or not sets:
        return False
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(tags) * max(1, len(sets)) / 2, 3.6))
    width = 0.8 / len(sets)
    for j, s in enumerate(sets):
        vals = [100 * evals[t].get(s, {}).get("greedy_accuracy", 0.0) for t in tags]
        bars = ax.bar([i + j * width for i in range(len(tags))], vals, width, label=s)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([i + width * (len(sets) - 1) / 2 for i in range(len(tags))])
    ax.set_xticklabels([LABELS.get(t, t) for t in tags], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("greedy accuracy (%)")
    ax.set_title("Held-out accuracy per stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def self_correction_table(evals: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "set", "before %", "after %", "delta (points)", "wrong->right", "right->wrong",
              "error located %", "located and corrected %"]
    rows = []
    for tag in _ordered(evals):
        for s, summ in sorted(evals[tag].items()):
            sc = summ.get("self_correction")
            if not sc:
                continue
            loc = sc.get("error_location") or {}
            rows.append([
                LABELS.get(tag, tag), s, _pct(sc["accuracy_before"]), _pct(sc["accuracy_after"]),
                f"{100 * sc['delta']:+.1f}", str(sc["wrong_to_right"]), str(sc["right_to_wrong"]),
                f"{_pct(loc.get('located_rate'))} (of {loc.get('teacher_located', 0)})" if loc else "-",
                _pct(loc.get("corrected_rate")) if loc else "-",
            ])
    return header, rows


def plot_self_correction(evals: dict[str, dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (f"{LABELS.get(t, t)}\n{s}", 100 * summ["self_correction"]["delta"])
        for t in _ordered(evals)
        for s, summ in sorted(evals[t].items())
        if summ.get("self_correction")
    ]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(points), 3.4))
    bars = ax.bar(range(len(points)), [v for _, v in points], color=["tab:green" if v >= 0 else "tab:red" for _, v in points])
    ax.bar_label(bars, fmt="%+.1f", fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels([n for n, _ in points], fontsize=7)
    ax.set_ylabel("accuracy after - before (points)")
    ax.set_title("Self-correction")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _stage_costs(run_dir: Path) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "seconds", "teacher requests", "cache hits", "prompt tokens", "completion tokens", "cost (USD)"]
    rows = []
    for m in sorted(run_dir.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        man = read_json(m)
        if man.get("stage") == "report":
            continue
        u = man.get("teacher_usage") or {}
        cost = u.get("cost_usd")
        rows.append(
            [
                man.get("stage", m.parent.name),
                str(man.get("seconds", "")),
                str(u.get("requests_sent", "-")),
                str(u.get("cache_hits", "-")),
                str(u.get("prompt_tokens", "-")),
                str(u.get("completion_tokens", "-")),
                "-" if cost is None else f"{cost:.4f}",
            ]
        )
    return header, rows


def run(cfg: RunConfig) -> dict:
    st = stage(cfg).start()
    run_dir = cfg.run_dir
    evals = _evals(run_dir)
    header, rows = accuracy_table(evals)
    parts = [f"# supercorrect report: {cfg.name}\n", f"Run folder: `{run_dir}`\n"]
    teacher_note = ""
    tmpl = run_dir / "templates" / "manifest.json"
    if tmpl.exists():
        man = read_json(tmpl)
        t = man.get("teacher", {})
        teacher_note = f"Teacher: {t.get('name')}" + ("; it checks reference steps by rule, it is not an LLM" if t.get("rule_based") else "")
        parts.append(teacher_note + "\n")
        c = man["counts"]
        parts.append(f"Templates kept: {c['kept']}/{c['problems']} (dropped by reason: {c['dropped_by_reason']})\n")
    parts += ["## Held-out accuracy\n", markdown_table(header, rows), ""]
    stage2 = []
    for name in ("sample", "correct", "pairs"):
        m = run_dir / name / "manifest.json"
        if m.exists():
            stage2.append(f"- `{name}`: " + ", ".join(f"{k}: {v}" for k, v in read_json(m)["counts"].items()))
    if stage2:
        parts += ["## Stage 2 data\n", *stage2, ""]
    for m in sorted(run_dir.glob("*/manifest.json")):  # sections a recipe's stages write (LEMA, explain, ...)
        section = read_json(m).get("report_section")
        if section and m.parent.name != "report":
            parts += [section, ""]
    if plot_accuracy(evals, run_dir / "report" / "accuracy.png"):
        parts.append("![accuracy per stage](accuracy.png)\n")
    sh, sr = self_correction_table(evals)
    if sr:
        parts += ["## Self-correction and error location\n",
                  "Each model gets the plain correction prompt on its own greedy solution; *delta* is accuracy "
                  "after minus before. *Error located*: on its wrong solutions that the teacher could locate, how "
                  "often the model's trace flags the teacher's step; *corrected*: and then reaches the right "
                  "answer.\n", markdown_table(sh, sr), ""]
        if plot_self_correction(evals, run_dir / "report" / "self_correction.png"):
            parts.append("![self-correction](self_correction.png)\n")
    ch, cr = _stage_costs(run_dir)
    parts += ["## Time, tokens and teacher cost per stage\n", markdown_table(ch, cr), ""]
    details = {tag: {s: {k: v for k, v in summ.items() if k != "reasons"} for s, summ in sets.items()}
               for tag, sets in evals.items()}
    parts += ["## Details\n", "```json", json.dumps(details, indent=1), "```", ""]
    atomic_write_text(run_dir / "report" / "report.md", "\n".join(parts))
    write_json(run_dir / "report" / "accuracy.json", evals)
    print("\n" + plain_table(header, rows) + "\n", flush=True)
    print(f"[report] {run_dir / 'report' / 'report.md'}", file=sys.stderr, flush=True)
    return st.finish({"models": len(evals)})


# The report reads every finished stage's manifest, so it is always redone (cheap).
STAGE = StageDef("report", "write the report (Markdown tables, PNG plots)", stage, run, always=True)
