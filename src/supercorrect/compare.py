"""Paired evidence from run folders: which model beats which, on the same problems, with what certainty.

Why: an accuracy table alone cannot say whether Cross-DPO beat HSFT or the two differ by noise. The evaluation
stages already write one graded row per problem (`eval-<model>/<set>/samples.jsonl`, keyed by the problem's stable
id; self-correction in `selfcorrect.jsonl`), so the paired tests need no recomputation and no model: this module
only reads those artifacts, joins them on problem ids and applies `stats`.

Used twice: the run report (`report.py`, one run) and `supercorrect compare RUN_DIR...` (many runs: variants and
training seeds of one study). Within a seed, models are paired on the problem id; pooled over the seeds of one
variant, the (seed, problem id) pairs are stacked and treated as one sample (the table says so).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import stats
from .errors import UserError
from .io import atomic_write_text, read_json, read_jsonl
from .metrics import error_location

# Each model against what it is built from (its parent), then the controls a claim must also beat.
# `hsft-more` is the equal-compute control (HSFT trained further on its own data for as many steps as Cross-DPO).
# HSFT against CoT SFT is the paper's ordering step CoT SFT < HSFT (both are built from base on the same problems).
COMPARISONS: list[tuple[str, str]] = [
    ("cot-sft", "base"),
    ("hsft", "base"),
    ("hsft", "cot-sft"),
    ("hsft-more", "hsft"),
    ("instance-dpo", "hsft"),
    ("cross-dpo", "hsft"),
    ("cross-dpo", "hsft-more"),
    ("cross-dpo", "instance-dpo"),
]
SELF_CORRECTED = "+sc"  # pseudo-model suffix: the model's answers after its own self-correction pass
# Pseudo-model suffix in the error-location table: always naming the step where the teacher most often found the
# first error in this model's wrong solutions (metrics.error_location), scored on the same solutions.
CONSTANT_GUESS = "+guess"
SUFFIXES = (SELF_CORRECTED, CONSTANT_GUESS)

MODEL_ORDER = ["base-cot", "base", "cot-sft", "hsft", "hsft-more", "instance-dpo", "cross-dpo"]
LABELS = {
    "base": "base (HT prompt)",
    "base-cot": "base (CoT prompt)",
    "cot-sft": "CoT SFT",
    "hsft": "HSFT",
    "hsft-more": "HSFT + more HSFT",
    "instance-dpo": "HSFT + instance DPO",
    "cross-dpo": "HSFT + Cross-DPO",
}

Outcomes = dict[str, dict[str, dict[Any, bool]]]  # model tag -> set -> {problem key: correct}


def base_tag(tag: str) -> str:
    """The model a pseudo-model is made from (`hsft+sc` -> `hsft`)."""
    for suffix in SUFFIXES:
        tag = tag.removesuffix(suffix)
    return tag


def label(tag: str) -> str:
    if tag.endswith(SELF_CORRECTED):
        return f"{label(tag.removesuffix(SELF_CORRECTED))}, self-corrected"
    if tag.endswith(CONSTANT_GUESS):
        return f"{label(tag.removesuffix(CONSTANT_GUESS))}: always the commonest step"
    return LABELS.get(tag, tag)


def ordered(tags: Iterable[str]) -> list[str]:
    def key(t: str) -> tuple[int, int, str]:
        base = base_tag(t)
        return (MODEL_ORDER.index(base) if base in MODEL_ORDER else 99, t != base, t)

    return sorted(tags, key=key)


@dataclass(frozen=True)
class Settings:
    """How intervals are computed (the run config's `stats:` block, or `compare`'s options)."""

    interval: stats.IntervalMethod = "wilson"
    level: float = stats.DEFAULT_LEVEL
    bootstrap_samples: int = stats.DEFAULT_BOOTSTRAP
    bootstrap_seed: int = 0

    @classmethod
    def of(cls, cfg: Any) -> Settings:
        s = cfg.stats
        return cls(s.interval, s.level, s.bootstrap_samples, s.bootstrap_seed)

    def accuracy(self, outcomes: Sequence[bool]) -> stats.Proportion:
        return stats.accuracy(outcomes, self.interval, self.level, self.bootstrap_samples, self.bootstrap_seed)

    def paired(self, a: dict, b: dict, cluster: Any = None) -> stats.PairedComparison:
        return stats.compare_paired(a, b, self.level, self.bootstrap_samples, self.bootstrap_seed, cluster)

    @property
    def pct(self) -> str:
        return f"{100 * self.level:g}%"


# ------------------------------------------------------------------------------------------ reading a run folder


def load_outcomes(run_dir: Path) -> Outcomes:
    """Greedy correctness per problem id for every finished eval stage, and after self-correction as the
    pseudo-model `<tag>+sc` (its parent: `<tag>` before self-correction)."""
    return _read_evals(run_dir)[0]


def _read_evals(run_dir: Path) -> tuple[Outcomes, Outcomes]:
    """(load_outcomes, error location) in one pass over the finished eval stages' sets (a set the stage skipped
    has no rows), each file read once. Error location per problem id, from each self-correction pass
    (metrics.error_location, the per-problem form of the summary's `error_location`): whether the model named the
    teacher's step, and the pseudo-model `<tag>+guess`, its chance baseline on the same solutions."""
    out: Outcomes = defaultdict(dict)
    located: Outcomes = defaultdict(dict)
    for m in sorted(Path(run_dir).glob("eval-*/manifest.json")):
        tag = m.parent.name.removeprefix("eval-")
        for set_name, summ in (read_json(m).get("summary") or {}).items():
            if "skipped" in summ:
                continue
            f = m.parent / set_name / "samples.jsonl"
            if f.exists():
                out[tag][set_name] = {r["id"]: bool(r["correct"]) for r in read_jsonl(f) if r.get("greedy")}
            sc = m.parent / set_name / "selfcorrect.jsonl"
            if sc.exists():
                rows = read_jsonl(sc)
                out[tag + SELF_CORRECTED][set_name] = {r["id"]: bool(r["after"]) for r in rows}
                same, guess, _ = error_location(rows)
                if same:
                    located[tag][set_name] = same
                    located[tag + CONSTANT_GUESS][set_name] = guess
    return dict(out), dict(located)


def comparisons_for(tags: Iterable[str]) -> list[tuple[str, str]]:
    """The (model, reference) pairs whose both sides were evaluated, in display order."""
    have = set(tags)
    pairs = [(a, b) for a, b in COMPARISONS if a in have and b in have]
    pairs += [(t, t.removesuffix(SELF_CORRECTED)) for t in have if t.endswith(SELF_CORRECTED)]
    pairs += [(base_tag(t), t) for t in have if t.endswith(CONSTANT_GUESS) and base_tag(t) in have]
    return sorted(pairs, key=lambda ab: (ordered(have).index(ab[0]), ab[1]))


@dataclass
class RunInfo:
    """One run folder: who made it (variant, seed), its data budget, and its per-problem outcomes."""

    path: Path
    name: str
    variant: str
    seed: int | None
    budget: dict[str, Any]
    outcomes: Outcomes = field(default_factory=dict)
    located: Outcomes = field(default_factory=dict)  # error location in the self-correction pass (_read_evals)

    @property
    def budget_text(self) -> str:
        shown = {k: "all" if v is None and k.endswith("max_pairs") else v for k, v in self.budget.items()}
        return ", ".join(f"{k} {v}" for k, v in shown.items()) or "-"


def _counts(run_dir: Path, stage: str) -> dict:
    m = run_dir / stage / "manifest.json"
    return read_json(m).get("counts", {}) if m.exists() else {}


# Each data-budget knob (stages.knobs) as recorded by the stage that used it (the first of these that finished).
KNOB_STAGES: dict[str, tuple[str, ...]] = {
    "sample.k": ("sample",),
    "correct.missing_step": ("correct",),
    "pairs.context": ("pairs",),
    "pairs.chosen": ("pairs",),
    "cross_dpo.max_pairs": ("cross-dpo", "instance-dpo"),
    "cross_dpo.rpo_alpha": ("cross-dpo", "instance-dpo"),
}


def _knobs(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, stages in KNOB_STAGES.items():
        for stage in stages:
            m = run_dir / stage / "manifest.json"
            if not m.exists():
                continue
            man = read_json(m)
            recorded = man.get("knobs") or {}
            if key in recorded:
                out[key] = recorded[key]
            elif key.startswith("pairs.") and key.split(".")[1] in (man.get("counts") or {}):
                out[key] = man["counts"][key.split(".")[1]]  # pairs manifests from before `knobs` was recorded
            else:
                continue
            break
    return out


def load_run(run_dir: str | Path) -> RunInfo:
    """Read a run folder's artifacts (manifests, graded samples); nothing is recomputed."""
    run_dir = Path(run_dir)
    manifests = sorted(run_dir.glob("*/manifest.json"))
    if not manifests:
        raise UserError(f"{run_dir}: not a run folder (no <stage>/manifest.json inside)")
    ident: dict = {}
    for m in sorted(manifests, key=lambda m: m.stat().st_mtime, reverse=True):  # the latest config's labels
        ident = read_json(m).get("run") or {}
        if ident:
            break
    tmpl, samp, pairs, xdpo = (_counts(run_dir, s) for s in ("templates", "sample", "pairs", "cross-dpo"))
    budget: dict[str, Any] = {}
    if tmpl:
        budget["train problems"] = tmpl.get("problems")
        budget["templates kept"] = tmpl.get("kept")
    if samp.get("problems"):
        budget["samples/problem"] = samp["samples"] // samp["problems"]
    if xdpo:
        budget["DPO pairs"] = f"{xdpo.get('pairs')}/{xdpo.get('pairs_available')}"
    elif pairs:
        budget["DPO pairs"] = pairs.get("pairs")
    idpo = _counts(run_dir, "instance-dpo")
    if idpo:
        budget["instance-DPO pairs"] = f"{idpo.get('pairs')}/{idpo.get('pairs_available')}"
    budget.update(_knobs(run_dir))
    outcomes, located = _read_evals(run_dir)
    return RunInfo(
        path=run_dir,
        name=ident.get("name", run_dir.name),
        # A folder from before manifests recorded their run: its own variant, never pooled with another by name.
        variant=ident.get("variant") or ident.get("name") or str(run_dir),
        seed=ident.get("seed"),
        budget=budget,
        outcomes=outcomes,
        located=located,
    )


# ---------------------------------------------------------------------------------------------------- cells


def pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}"


def interval_cell(iv: stats.Interval, signed: bool = False) -> str:
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"[{f.format(100 * iv.low)}, {f.format(100 * iv.high)}]"


def accuracy_cell(p: stats.Proportion) -> str:
    return f"{pct(p.estimate)} {interval_cell(p.interval)} (n={p.n})"


# ------------------------------------------------------------------------------------------------ one run


def paired_table(outcomes: Outcomes, settings: Settings) -> tuple[list[str], list[list[str]]]:
    """One run: each model against its reference on every set both were evaluated on."""
    header = ["model", "vs", "set", "pairs", "model %", "vs %", "difference (points)",
              f"{settings.pct} CI (paired bootstrap)", "model only right", "vs only right", "McNemar exact p"]  # fmt: skip
    rows = []
    for a, b in comparisons_for(outcomes):
        for s in sorted(set(outcomes[a]) & set(outcomes[b])):
            pc = settings.paired(outcomes[a][s], outcomes[b][s])
            if not pc.n:
                continue
            rows.append([label(a), label(b), s, str(pc.n), pct(pc.a_accuracy), pct(pc.b_accuracy),
                         f"{100 * pc.diff:+.1f}", interval_cell(pc.interval, signed=True), str(pc.a_only),
                         str(pc.b_only), stats.format_p(pc.p_value)])  # fmt: skip
    return header, rows


def plot_paired(outcomes: Outcomes, settings: Settings, path: Path) -> bool:
    """One run: each paired difference (model minus vs, points) with its paired-bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for a, b in comparisons_for(outcomes):
        for s in sorted(set(outcomes[a]) & set(outcomes[b])):
            pc = settings.paired(outcomes[a][s], outcomes[b][s])
            if pc.n:
                points.append((f"{label(a)} vs {label(b)} ({s}), p={stats.format_p(pc.p_value)}", pc))
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.35 * len(points)))
    ys = list(range(len(points)))[::-1]
    for y, (_, pc) in zip(ys, points, strict=True):
        d, lo, hi = 100 * pc.diff, 100 * pc.interval.low, 100 * pc.interval.high
        ax.errorbar([d], [y], xerr=[[d - lo], [hi - d]], fmt="o", capsize=3,
                    color="tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray")  # fmt: skip
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([n for n, _ in points], fontsize=7)
    ax.set_xlabel(f"accuracy difference (points), {settings.pct} paired bootstrap interval")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------- many runs

CSV_FIELDS = ["variant", "model", "model_label", "set", "scope", "seeds", "n", "correct", "accuracy", "acc_low",
              "acc_high", "acc_sd", "reference", "reference_variant", "pairs", "diff", "diff_low", "diff_high", "diff_low_by_problem",
              "diff_high_by_problem", "diff_sd", "model_only", "reference_only", "mcnemar_p", "level",
              "interval", "measure"]  # fmt: skip


@dataclass
class Comparison:
    """The result of `compare`: the runs read and one row per variant, model, reference, set and scope
    (`seed N`, `pooled` over the variant's seeds, `seed mean +- sd`)."""

    runs: list[RunInfo]
    rows: list[dict[str, Any]]
    settings: Settings


def _seed_key(run: RunInfo, i: int) -> Any:
    """The run's training seed; a run folder that does not record one counts as its own seed."""
    return run.seed if run.seed is not None else f"run{i}"


def compare_runs(run_dirs: Sequence[str | Path], settings: Settings = Settings(),
                 baseline: str | None = None) -> Comparison:  # fmt: skip
    """Read the run folders and build the cross-run table (no recomputation: artifacts only).

    Each model is tested against its reference in the same run (COMPARISONS). With `baseline` (a variant name),
    each model of every other variant is also tested against the same model of the baseline variant, paired on
    the same seed and problem ids (how a setting chosen on the dev split is told apart from the default)."""
    if not run_dirs:
        raise UserError("compare: give at least one run folder")
    runs = [load_run(d) for d in run_dirs]
    by_variant: dict[str, dict[Any, RunInfo]] = defaultdict(dict)
    for i, r in enumerate(runs):
        seed = _seed_key(r, i)
        if seed in by_variant[r.variant]:
            raise UserError(f"compare: variant {r.variant!r} has two runs with seed {seed} "
                            f"({by_variant[r.variant][seed].path}, {r.path}); give each run its own `variant:` or seed")  # fmt: skip
        by_variant[r.variant][seed] = r
    if baseline is not None and baseline not in by_variant:
        raise UserError(f"compare: --baseline {baseline!r} is not a variant of these runs (have: {', '.join(by_variant)})")
    rows: list[dict[str, Any]] = []
    # The same tables for two per-problem outcomes: greedy correctness, and error location in the self-correction
    # pass (the rate over each model's own located wrong solutions; a paired row compares two models on the
    # problems both answered wrong).
    measures: list[tuple[str, Callable[[RunInfo], Outcomes]]] = [
        ("accuracy", lambda r: r.outcomes), ("error location", lambda r: r.located)]  # fmt: skip
    for measure, outcomes_of in measures:
        for variant, group in by_variant.items():
            seeds = sorted(group, key=str)
            tags = ordered({t for r in group.values() for t in outcomes_of(r)})
            pairs = comparisons_for(tags)
            refs = {a: [b for x, b in pairs if x == a] for a in tags}
            for tag in tags:
                sets = sorted({s for r in group.values() for s in outcomes_of(r).get(tag, {})})
                for s in sets:
                    def get(run: RunInfo | None, t: str | None, s: str = s, of=outcomes_of) -> dict | None:
                        return of(run).get(t, {}).get(s) if run is not None and t else None

                    base = {"measure": measure, "variant": variant, "model": tag, "model_label": label(tag),
                            "set": s, "level": settings.level, "interval": settings.interval}  # fmt: skip
                    for ref in refs[tag] or [None]:
                        items = [(seed, get(group[seed], tag), get(group[seed], ref)) for seed in seeds]
                        rows += _rows_for({**base, "reference": ref or "", "reference_variant": ""}, items, settings)
                    if baseline is not None and variant != baseline:
                        other = by_variant[baseline]
                        items = [(seed, get(group[seed], tag), get(other.get(seed), tag)) for seed in seeds]
                        if any(b for _, _, b in items):
                            rows += _rows_for({**base, "reference": tag, "reference_variant": baseline}, items,
                                              settings)  # fmt: skip
    return Comparison(runs, rows, settings)


def _rows_for(base: dict[str, Any], items: list[tuple[Any, dict | None, dict | None]],
              settings: Settings) -> list[dict[str, Any]]:  # fmt: skip
    """Rows for one model against one reference: per seed, pooled over seeds, mean +- sd over seeds.
    `items`: (seed, model outcomes, reference outcomes or None) per seed."""
    out = []
    pooled_a: dict[Any, bool] = {}
    pooled_b: dict[Any, bool] = {}
    per_seed: list[tuple[float, float | None]] = []
    for seed, a, b in items:
        if not a:
            continue
        row = {**base, "scope": f"seed {seed}", "seeds": str(seed), **_acc(settings.accuracy(list(a.values())))}
        if b:
            row.update(_diff(settings.paired(a, b)))
            pooled_b.update({(seed, k): v for k, v in b.items()})
        pooled_a.update({(seed, k): v for k, v in a.items()})
        per_seed.append((row["accuracy"], row.get("diff")))
        out.append(row)
    if len(out) > 1:
        seeds_text = ",".join(str(r["seeds"]) for r in out)
        row = {**base, "scope": "pooled", "seeds": seeds_text, **_acc(settings.accuracy(list(pooled_a.values())))}
        if pooled_b:  # keys (seed, problem id): also the cluster bootstrap over problems
            row.update(_diff(settings.paired(pooled_a, pooled_b, cluster=lambda key: key[1])))
        out.append(row)
        acc = stats.across_seeds([a for a, _ in per_seed])
        row = {**base, "scope": "seed mean", "seeds": seeds_text, "n": len(per_seed), "accuracy": acc.mean,
               "acc_sd": acc.sd}  # fmt: skip
        diffs = [d for _, d in per_seed if d is not None]
        if len(diffs) == len(per_seed):
            spread = stats.across_seeds(diffs)
            row.update(diff=spread.mean, diff_sd=spread.sd)
        out.append(row)
    return out


def _acc(p: stats.Proportion) -> dict[str, Any]:
    return {"n": p.n, "correct": p.k, "accuracy": p.estimate, "acc_low": p.interval.low, "acc_high": p.interval.high}


def _diff(pc: stats.PairedComparison) -> dict[str, Any]:
    out = {"pairs": pc.n, "diff": pc.diff, "diff_low": pc.interval.low, "diff_high": pc.interval.high,
           "model_only": pc.a_only, "reference_only": pc.b_only, "mcnemar_p": pc.p_value}  # fmt: skip
    if pc.cluster_interval is not None:
        out.update(diff_low_by_problem=pc.cluster_interval.low, diff_high_by_problem=pc.cluster_interval.high)
    return out


# ------------------------------------------------------------------------------------------------ writing


def to_csv(cmp: Comparison) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in cmp.rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k, "")) for k in CSV_FIELDS})
    return buf.getvalue()


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _md_rows(rows_in: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in rows_in:
        mean_row = r["scope"] == "seed mean"
        if mean_row:
            acc = f"{pct(r['accuracy'])} +- {100 * r['acc_sd']:.1f} (sd over {r['n']} seeds)"
        else:
            acc = f"{pct(r['accuracy'])} [{100 * r['acc_low']:.1f}, {100 * r['acc_high']:.1f}]"
        diff = ci = disc = p = "-"
        if r.get("diff") is not None:
            diff = f"{100 * r['diff']:+.1f}" + (f" +- {100 * r['diff_sd']:.1f}" if mean_row else "")
        if r.get("diff_low") is not None:
            ci = f"[{100 * r['diff_low']:+.1f}, {100 * r['diff_high']:+.1f}]"
            if r.get("diff_low_by_problem") is not None:
                ci += f"; by problem [{100 * r['diff_low_by_problem']:+.1f}, {100 * r['diff_high_by_problem']:+.1f}]"
            disc = f"{r['model_only']} / {r['reference_only']}"
            p = stats.format_p(r["mcnemar_p"])
        scope = r["scope"] if r["scope"] != "pooled" else f"pooled ({r['seeds']})"
        if mean_row:
            scope = f"mean +- sd ({r['seeds']})"
        vs = label(r["reference"]) if r["reference"] else "-"
        if r.get("reference_variant"):
            vs = f"{vs} ({r['reference_variant']})"
        rows.append([r["variant"], r["model_label"], r["set"], scope, str(r["n"]), acc, vs, diff, ci, disc, p])
    return rows


def to_markdown(cmp: Comparison) -> str:
    s = cmp.settings
    run_rows = [[str(r.path), r.variant, "?" if r.seed is None else str(r.seed), r.budget_text] for r in cmp.runs]
    header = ["variant", "model", "set", "seeds", "n", f"accuracy % [{s.pct} CI]", "vs", "difference (points)",
              f"{s.pct} CI (paired bootstrap)", "model only / vs only right", "McNemar exact p"]  # fmt: skip
    rows = _md_rows([r for r in cmp.rows if r["measure"] == "accuracy"])
    loc_rows = _md_rows([r for r in cmp.rows if r["measure"] == "error location"])
    loc_header = ["variant", "model", "set", "seeds", "n (located wrong)", f"same step % [{s.pct} CI]", "vs",
                  "difference (points)", f"{s.pct} CI (paired bootstrap)", "model only / vs only", "McNemar exact p"]  # fmt: skip
    location = [] if not loc_rows else [
        "## Error location (self-correction pass)\n",
        "On the model's wrong greedy solutions whose first error the teacher located (*n*): how often the model's "
        "own correction names the same step. A paired row compares two models on the problems both answered wrong "
        "and the teacher located in both (their solutions differ, the problems are the same); *model only / vs "
        "only*: problems where only one of the two named the teacher's step. *always the commonest step*: the "
        "chance baseline, on the same solutions, of naming whatever step the teacher most often found the first "
        "error in (chosen per seed on these solutions, so it is an upper bound on any constant guess); a model "
        "that names step 1 on every solution scores the share of step-1 errors without locating anything, and "
        "only a rate above this row's is evidence of locating.",
        "",
        _md_table(loc_header, loc_rows),
        "",
    ]  # fmt: skip
    method = "Wilson score" if s.interval == "wilson" else f"percentile bootstrap ({s.bootstrap_samples} resamples)"
    return "\n".join([
        "# supercorrect compare\n",
        "## Runs\n",
        _md_table(["run folder", "variant", "seed", "data budget"], run_rows),
        "",
        "## Accuracy and paired tests\n",
        f"Accuracy: greedy, with a {s.pct} {method} interval. *vs*: the model it is built from (or a control), or, with a variant in brackets, the same model in "
        "the baseline variant (same seed, same problems); the "
        "difference is model minus vs on the same problems, with a paired percentile bootstrap interval "
        f"({s.bootstrap_samples} resamples, seed {s.bootstrap_seed}) and the exact McNemar test on the discordant "
        "pairs (two-sided binomial test of *model only right* against Bin(discordant, 1/2)).",
        "Within a seed, pairs are matched on the problem id. *pooled*: the (seed, problem) pairs of all seeds of the "
        "variant are stacked and treated as one sample (interval and McNemar test); the same problems recur across "
        "seeds, so these speak for these problems under seed variation. *by problem*: the paired interval from a "
        "cluster bootstrap that resamples problems with all their seeds, the one to read for new problems. "
        "*mean +- sd*: over seeds, each seed's accuracy (or difference) counted once.",
        "",
        _md_table(header, rows),
        "",
        *location,
    ])  # fmt: skip


def plot(cmp: Comparison, path: Path) -> bool:
    """Pooled accuracy per model (one bar per variant) with its interval as error bars, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc_rows: dict[tuple[str, str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in cmp.rows:
        if r["measure"] == "accuracy" and r["scope"] != "seed mean" and not r["model"].endswith(SELF_CORRECTED):
            acc_rows[(r["set"], r["variant"], r["model"])][r["scope"]].append(r)
    sets = sorted({k[0] for k in acc_rows})
    variants = list(dict.fromkeys(k[1] for k in acc_rows))
    tags = ordered({k[2] for k in acc_rows})
    if not sets or not tags:
        return False
    fig, axes = plt.subplots(len(sets), 1, figsize=(2 + 1.1 * len(tags) * max(1, len(variants)) / 1.5,
                                                    3.4 * len(sets)), squeeze=False)  # fmt: skip
    width = 0.8 / len(variants)
    for ax, s in zip(axes[:, 0], sets, strict=True):
        for j, v in enumerate(variants):
            xs, ys, lo, hi = [], [], [], []
            for i, t in enumerate(tags):
                scopes = acc_rows.get((s, v, t))
                if not scopes:
                    continue
                main = (scopes.get("pooled") or next(iter(scopes.values())))[0]
                x = i + j * width
                xs.append(x)
                ys.append(100 * main["accuracy"])
                lo.append(100 * (main["accuracy"] - main["acc_low"]))
                hi.append(100 * (main["acc_high"] - main["accuracy"]))
                seed_rows = [rs[0] for sc, rs in scopes.items() if sc.startswith("seed ")]
                if len(seed_rows) > 1:
                    ax.scatter([x + width / 4] * len(seed_rows), [100 * r["accuracy"] for r in seed_rows], s=14,
                               color="white", edgecolors="black", zorder=3)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=v)
        ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(tags))])
        ax.set_xticklabels([label(t) for t in tags], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("greedy accuracy (%)")
        ax.set_title(f"{s}: pooled accuracy, {cmp.settings.pct} interval; dots: seeds", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write(cmp: Comparison, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"markdown": out_dir / "compare.md", "csv": out_dir / "compare.csv", "png": out_dir / "compare.png"}
    md = to_markdown(cmp)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plot(cmp, paths["png"]):
        md += "\n![accuracy per model](compare.png)\n"
    else:
        paths.pop("png")
    atomic_write_text(paths["markdown"], md)
    atomic_write_text(paths["csv"], to_csv(cmp))
    return paths
