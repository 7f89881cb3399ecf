"""The run report: Markdown tables and PNG plots gathered from the stages' manifests and summaries.

Written to `<run_dir>/report/report.md` with plots beside it (training curves too, see tracking.py), the same as
one self-contained `report.html` with a browser of the stage-2 data (report_html.py), and the main table printed
to the terminal. Every accuracy carries a 95% interval and every model is tested against its parent on the same
problems (paired bootstrap, exact McNemar): see stats.py and compare.py, which read the eval stages' per-problem rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import stats
from .compare import (
    LABELS,
    MODEL_ORDER,
    SELF_CORRECTED,
    Outcomes,
    Settings,
    interval_cell,
    load_outcomes,
    load_run,
    paired_table,
    plot_paired,
)
from .config import RunConfig
from .data import load_problems
from .errors import UserError
from .io import atomic_write_text, read_json, write_json
from .judge import report_section
from .stages import Stage
from .stages.common import StageDef


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


def accuracy_intervals(evals: dict[str, dict], outcomes: Outcomes, settings: Settings) -> dict[tuple[str, str], stats.Interval]:
    """{(model, set): interval of its greedy accuracy}, from the per-problem rows (Wilson: from the summary's
    counts when the rows are missing)."""
    out = {}
    for tag, sets in evals.items():
        for s, summ in sets.items():
            rows = outcomes.get(tag, {}).get(s)
            if rows:
                out[(tag, s)] = settings.accuracy(list(rows.values())).interval
            elif "greedy_accuracy" in summ and settings.interval == "wilson":
                n = summ["problems"]
                out[(tag, s)] = stats.wilson_interval(round(summ["greedy_accuracy"] * n), n, settings.level)
    return out


def accuracy_table(evals: dict[str, dict], intervals: dict[tuple[str, str], stats.Interval] | None = None,
                   level: str = "95%") -> tuple[list[str], list[list[str]]]:  # fmt: skip
    sets = sorted({s for v in evals.values() for s in v})
    header = ["model", *[f"{s} (greedy % [{level} CI])" if intervals else f"{s} (greedy %)" for s in sets]]
    rows = []
    for tag in _ordered(evals):
        cells = [LABELS.get(tag, tag)]
        for s in sets:
            summ = evals[tag].get(s, {})
            n = summ.get("problems")
            iv = (intervals or {}).get((tag, s))
            ci = f" {interval_cell(iv)}" if iv else ""
            cells.append("skipped" if "skipped" in summ else f"{_pct(summ.get('greedy_accuracy'))}{ci} (n={n})")
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


def plot_accuracy(evals: dict[str, dict], path: Path,
                  intervals: dict[tuple[str, str], stats.Interval] | None = None) -> bool:  # fmt: skip
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
        ivs = [(intervals or {}).get((t, s)) for t in tags]
        err = [[v - 100 * iv.low if iv else 0.0 for v, iv in zip(vals, ivs, strict=True)],
               [100 * iv.high - v if iv else 0.0 for v, iv in zip(vals, ivs, strict=True)]]  # fmt: skip
        bars = ax.bar([i + j * width for i in range(len(tags))], vals, width, label=s,
                      yerr=err if intervals else None, capsize=3)  # fmt: skip
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks([i + width * (len(sets) - 1) / 2 for i in range(len(tags))])
    ax.set_xticklabels([LABELS.get(t, t) for t in tags], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("greedy accuracy (%)")
    level = next(iter(intervals.values())).level if intervals else None
    ax.set_title("Held-out accuracy per stage" + (f" (error bars: {100 * level:g}% interval)" if level else ""),
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def self_correction_table(evals: dict[str, dict], outcomes: Outcomes | None = None,
                          settings: Settings | None = None) -> tuple[list[str], list[list[str]]]:  # fmt: skip
    header = ["model", "set", "before %", "after %", "delta (points)", "delta CI (paired bootstrap)",
              "wrong->right", "right->wrong", "McNemar exact p", "error located %", "located and corrected %"]
    settings = settings or Settings()
    rows = []
    for tag in _ordered(evals):
        for s, summ in sorted(evals[tag].items()):
            sc = summ.get("self_correction")
            if not sc:
                continue
            loc = sc.get("error_location") or {}
            after = (outcomes or {}).get(tag + SELF_CORRECTED, {}).get(s)
            before = (outcomes or {}).get(tag, {}).get(s)
            ci = interval_cell(settings.paired(after, before).interval, signed=True) if after and before else "-"
            p = stats.format_p(stats.mcnemar_exact(sc["wrong_to_right"], sc["right_to_wrong"]))
            rows.append([
                LABELS.get(tag, tag), s, _pct(sc["accuracy_before"]), _pct(sc["accuracy_after"]),
                f"{100 * sc['delta']:+.1f}", ci, str(sc["wrong_to_right"]), str(sc["right_to_wrong"]), p,
                _located_cell(loc),
                _pct(loc.get("corrected_rate")) if loc else "-",
            ])
    return header, rows


def _located_cell(loc: dict) -> str:
    """'9.6 (of 740; always step 2: 62.0)': the located rate beside its chance baseline (summaries written
    before the baseline existed show the rate alone)."""
    if not loc:
        return "-"
    cell = f"{_pct(loc.get('located_rate'))} (of {loc.get('teacher_located', 0)}"
    if loc.get("constant_guess_rate") is not None:
        cell += f"; always step {loc['constant_guess_step']}: {_pct(loc['constant_guess_rate'])}"
    return cell + ")"


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


def locator_section(run_dir: Path) -> list[str]:
    """Where the teacher located the first error (k) and why (its reason per row), from corrections.jsonl:
    a locator that blames the last step for most rows, or one reason for all, is visible here."""
    from collections import Counter

    from .io import read_jsonl

    path = run_dir / "correct" / "corrections.jsonl"
    if not path.exists():
        return []
    rows = read_jsonl(path, skip_bad=True)
    ks = Counter("none" if r.get("k") is None else str(r["k"]) for r in rows)
    last = sum(1 for r in rows if r.get("k") is not None and r["k"] == len(r.get("student_steps") or []))
    why = Counter(r.get("locator_reason") or "not_given" for r in rows)
    order = sorted(ks, key=lambda k: (k == "none", int(k) if k.isdigit() else 0))
    return [
        "## First-error location\n",
        f"{len(rows)} wrong solutions; k = the step the teacher blamed (1-based); {last} blamed their last step.\n",
        markdown_table(["k", *order], [["rows", *[str(ks[k]) for k in order]]]),
        "",
        markdown_table(["reason", "rows"], [[r, str(n)] for r, n in why.most_common()]),
        "",
    ]


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
                str(u.get("requests_sent", "-")) + (f" + {u['batch_requests']} in batches" if u.get("batch_requests") else ""),
                str(u.get("cache_hits", "-")),
                str(u.get("prompt_tokens", "-")),
                str(u.get("completion_tokens", "-")),
                "-" if cost is None else f"{cost:.4f}",
            ]
        )
    return header, rows


TRAINING_STAGES = ("hsft", "hsft-more", "cross-dpo", "cot-sft", "instance-dpo")


def _training_curves(run_dir: Path) -> list[str]:
    """Per-step curves of every training stage from its saved log history (tracking.py), as report lines."""
    from .tracking import load_history, plot_curves

    lines = []
    for name in TRAINING_STAGES:
        history = load_history(run_dir / name) if (run_dir / name / "manifest.json").exists() else None
        if history and plot_curves(history, f"{LABELS.get(name, name)}: training curves",
                                   run_dir / "report" / f"curves-{name}.png"):  # fmt: skip
            lines.append(f"![{LABELS.get(name, name)} training curves](curves-{name}.png)\n")
    if lines:
        lines = ["## Training curves\n", "Per logged step: loss, reward margin and accuracy (DPO stages), "
                 "learning rate and gradient norm, from each stage's `log_history.json`; TensorBoard event files "
                 "(when written) are in `<stage>/tensorboard/`.\n", *lines]
    return lines


def _stage2_questions(cfg: RunConfig) -> dict[str, str] | None:
    """Problem texts for the HTML report's stage-2 browser; None when the sampled data set cannot be read."""
    if not (cfg.run_dir / "correct" / "corrections.jsonl").exists() or cfg.sample.data not in cfg.data:
        return None
    try:
        return {p.id: p.question for p in load_problems(cfg.data[cfg.sample.data], cfg.base_dir)}
    except (UserError, OSError, ValueError):
        return None


def run(cfg: RunConfig) -> dict:
    st = stage(cfg).start()
    run_dir = cfg.run_dir
    evals = _evals(run_dir)
    settings = Settings.of(cfg)
    outcomes = load_outcomes(run_dir)
    intervals = accuracy_intervals(evals, outcomes, settings)
    header, rows = accuracy_table(evals, intervals, settings.pct)
    parts = [f"# supercorrect report: {cfg.name}\n", f"Run folder: `{run_dir}`\n"]
    # What `compare` reads too: the numbers below come from this variant, seed and data budget.
    budget = load_run(run_dir).budget_text if any(run_dir.glob("*/manifest.json")) else "-"
    parts.append(f"Variant: `{cfg.variant or cfg.name}`; training seed: {cfg.seed}; data budget: {budget}\n")
    shared = [(m.parent.name, read_json(m).get("shared_from")) for m in sorted(run_dir.glob("*/manifest.json"))]
    if shared := [(name, src) for name, src in shared if src]:
        parts.append("Shared from another seed's run (these stages do not depend on the training seed; copied "
                     "because their fingerprints are equal): "
                     + ", ".join(f"`{name}` from run `{src.get('run')}` (seed {src.get('seed')})" for name, src in shared)
                     + "\n")  # fmt: skip
    teacher_note = ""
    tmpl = run_dir / "templates" / "manifest.json"
    if tmpl.exists():
        man = read_json(tmpl)
        t = man.get("teacher", {})
        teacher_note = f"Teacher: {t.get('name')}" + ("; it checks reference steps by rule, it is not an LLM" if t.get("rule_based") else "")
        parts.append(teacher_note + "\n")
        c = man["counts"]
        parts.append(f"Templates kept: {c['kept']}/{c['problems']} (dropped by reason: {c['dropped_by_reason']})\n")
    method = "Wilson score" if settings.interval == "wilson" else "percentile bootstrap"
    parts += ["## Held-out accuracy\n", f"Greedy accuracy with a {settings.pct} {method} interval.\n",
              markdown_table(header, rows), ""]
    ph, pr = paired_table(outcomes, settings)
    if pr:
        parts += ["## Each model against its parent (paired, same problems)\n",
                  "Difference = model minus *vs* on the problems both answered, with a paired percentile bootstrap "
                  f"interval ({settings.bootstrap_samples} resamples, seed {settings.bootstrap_seed}) and the exact "
                  "McNemar p-value (two-sided binomial test on the problems only one of the two got right). "
                  "*self-corrected*: the model's answers after its own correction pass, against its first answers.\n",
                  markdown_table(ph, pr), ""]  # fmt: skip
        if plot_paired(outcomes, settings, run_dir / "report" / "paired.png"):
            parts.append("![paired differences](paired.png)\n")
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
    parts += locator_section(run_dir)
    if plot_accuracy(evals, run_dir / "report" / "accuracy.png", intervals):
        parts.append("![accuracy per stage](accuracy.png)\n")
    parts += report_section(run_dir)  # protocol of each number; judge vs rule-based accuracy, disagreements
    sh, sr = self_correction_table(evals, outcomes, settings)
    if sr:
        parts += ["## Self-correction and error location\n",
                  "Each model gets the plain correction prompt on its own greedy solution; *delta* is accuracy "
                  "after minus before. *Error located*: on its wrong solutions that the teacher could locate, how "
                  "often the model's trace flags the teacher's step, beside the chance baseline (*always step k*: the "
                  "share a model would score by naming the step where the teacher most often found the error, "
                  "whatever the solution); *corrected*: and then reaches the right answer.\n", markdown_table(sh, sr), ""]
        if plot_self_correction(evals, run_dir / "report" / "self_correction.png"):
            parts.append("![self-correction](self_correction.png)\n")
    parts += _training_curves(run_dir)
    ch, cr = _stage_costs(run_dir)
    parts += ["## Time, tokens and teacher cost per stage\n", markdown_table(ch, cr), ""]
    details = {tag: {s: {k: v for k, v in summ.items() if k != "reasons"} for s, summ in sets.items()}
               for tag, sets in evals.items()}
    parts += ["## Details\n", "```json", json.dumps(details, indent=1), "```", ""]
    atomic_write_text(run_dir / "report" / "report.md", "\n".join(parts))
    write_json(run_dir / "report" / "accuracy.json", evals)
    from .report_html import write_report_html

    write_report_html(run_dir, f"supercorrect report: {cfg.name}", _stage2_questions(cfg))
    print("\n" + plain_table(header, rows) + "\n", flush=True)
    print(f"[report] {run_dir / 'report' / 'report.md'}", file=sys.stderr, flush=True)
    return st.finish({"models": len(evals)})


# The report reads every finished stage's manifest, so it is always redone (cheap).
STAGE = StageDef("report", "write the report (Markdown tables, PNG plots)", stage, run, always=True)
