"""`supercorrect compare` and the report's statistics, end to end on run folders written by the real writers.

The run folders are made with the stages' own `Stage.start/finish`, `write_jsonl` and `metrics.summarize`, in
the row format `stages/evaluate.py` writes, with planted per-problem correctness so that every number in the
tables is known in advance (no model is loaded: `compare` and the report only read artifacts).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from supercorrect import report, stats
from supercorrect.cli import main
from supercorrect.compare import Settings, compare_runs, load_run, to_csv, to_markdown, write
from supercorrect.config import RunConfig
from supercorrect.data import generate_synthetic
from supercorrect.errors import UserError
from supercorrect.io import write_json, write_jsonl
from supercorrect.metrics import summarize
from supercorrect.stages import Stage
from supercorrect.stages import evaluate as ev

N = 40
PROBLEMS = generate_synthetic(N, seed=0, split="test", max_steps=3)


def _cfg(root: Path, name: str, seed: int, variant: str | None) -> RunConfig:
    return RunConfig.model_validate({
        "name": name, "seed": seed, "variant": variant, "run_root": str(root),
        "data": {"test": {"kind": "synthetic", "split": "test", "n": N, "max_steps": 3}},
        "evaluate": {"sets": ["test"]}, "stats": {"bootstrap_samples": 2000},
    })  # fmt: skip


def _eval(cfg: RunConfig, tag: str, right: set[int], selfcorrect: set[int] | None = None,
          problems: list = PROBLEMS) -> None:  # fmt: skip
    """An eval stage's artifacts as evaluate.run writes them, with problem i of `problems` correct iff i in `right`."""
    n = len(problems)
    st = ev.stage(cfg, tag).start()
    rows = []
    for i, p in enumerate(problems):
        ok = i in right
        rows.append({"id": p.id, "greedy": True, "sample": 0, "text": f"<Answer>{p.answer if ok else -1}</Answer>",
                     "n_tokens": 9, "finish": "stop", "answer": p.answer, "level": p.level, "subject": p.subject,
                     "source": p.source, "correct": ok, "reason": "correct" if ok else "wrong",
                     "predicted": p.answer if ok else "-1", "extracted_from": "answer_tag"})  # fmt: skip
    write_jsonl(st.dir / "test" / "samples.jsonl", rows)
    summary = summarize(rows)
    if selfcorrect is not None:
        sc = [{"id": p.id, "before": i in right, "after": i in selfcorrect, "trace": "", "model_step": None}
              for i, p in enumerate(problems)]  # fmt: skip
        write_jsonl(st.dir / "test" / "selfcorrect.jsonl", sc)
        summary["self_correction"] = {
            "accuracy_before": len(right) / n, "accuracy_after": len(selfcorrect) / n,
            "wrong_to_right": len(selfcorrect - right), "right_to_wrong": len(right - selfcorrect),
            "delta": (len(selfcorrect) - len(right)) / n,
        }  # fmt: skip
    write_json(st.dir / "test" / "summary.json", summary)
    st.finish({"sets": 1, "new_tokens": 9 * n}, model=tag, prompt="ht", summary={"test": summary})


def make_run(root: Path, name: str, seed: int, variant: str | None, extra_right: int) -> RunConfig:
    """base right on 0-7; HSFT on 0-15; Cross-DPO loses 14, 15 and gains 16 .. 16+extra_right-1."""
    cfg = _cfg(root, name, seed, variant)
    # The training stages' manifests, with the counts their stages write (templates.py, hsft.py, ...).
    Stage(cfg, "templates").start().finish({"problems": 48, "kept": 45, "dropped": 3,
                                            "dropped_by_reason": {"answer_mismatch": 3}, "skipped_rows": 0})
    Stage(cfg, "hsft").start().finish({"examples": 45, "steps": 12})
    Stage(cfg, "sample").start().finish({"problems": 48, "samples": 96, "correct": 40, "wrong_kept": 40})
    Stage(cfg, "pairs").start().finish({"corrections": 40, "pairs": 30, "dropped_by_reason": {}})
    Stage(cfg, "cross-dpo").start().finish({"pairs": 24, "pairs_available": 30, "steps": 6})
    hsft = set(range(16))
    _eval(cfg, "base", set(range(8)))
    _eval(cfg, "hsft", hsft, selfcorrect=(hsft - {0}) | {30, 31, 32})
    _eval(cfg, "cross-dpo", set(range(14)) | set(range(16, 16 + extra_right)))
    return cfg


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    a0 = make_run(tmp_path, "study-a-s0", 0, "variant-a", extra_right=12)
    a1 = make_run(tmp_path, "study-a-s1", 1, "variant-a", extra_right=6)
    b0 = make_run(tmp_path, "study-b-s0", 0, "variant-b", extra_right=2)
    return [a0.run_dir, a1.run_dir, b0.run_dir]


def _row(rows, **want):
    found = [r for r in rows if all(str(r[k]) == str(v) for k, v in want.items())]
    assert len(found) == 1, (want, found)
    return found[0]


def test_load_run_names_variant_seed_budget(runs):
    info = load_run(runs[1])
    assert (info.name, info.variant, info.seed) == ("study-a-s1", "variant-a", 1)
    # The knobs as the stage that used them recorded them (stages.knobs in every manifest): this config's defaults.
    assert info.budget == {"train problems": 48, "templates kept": 45, "samples/problem": 2, "DPO pairs": "24/30",
                           "sample.k": 4, "pairs.context": "ht", "pairs.chosen": "cause_correction",
                           "cross_dpo.max_pairs": None, "cross_dpo.rpo_alpha": 0.0}  # fmt: skip
    assert set(info.outcomes) == {"base", "hsft", "hsft+sc", "cross-dpo"}
    assert sum(info.outcomes["cross-dpo"]["test"].values()) == 14 + 6


def test_compare_values(runs):
    cmp = compare_runs(runs, Settings(bootstrap_samples=2000))
    rows = list(csv.DictReader(io.StringIO(to_csv(cmp))))
    # Seed 0 of variant a: Cross-DPO right alone on 12 problems, HSFT alone on 2 (14, 15).
    r = _row(rows, variant="variant-a", model="cross-dpo", reference="hsft", scope="seed 0")
    assert (r["n"], r["correct"], r["pairs"], r["model_only"], r["reference_only"]) == ("40", "26", "40", "12", "2")
    assert float(r["diff"]) == pytest.approx(10 / 40)
    # Exact McNemar by hand: 2 * (C(14,0) + C(14,1) + C(14,2)) / 2^14 = 2 * 106 / 16384.
    assert float(r["mcnemar_p"]) == pytest.approx(212 / 16384)
    assert float(r["diff_low"]) <= 0.25 <= float(r["diff_high"])
    wil = stats.wilson_interval(26, 40)
    assert (float(r["acc_low"]), float(r["acc_high"])) == pytest.approx((wil.low, wil.high))
    # Pooled over seeds 0 and 1: (seed, problem) pairs stacked, 80 pairs, discordant 12+6 vs 2+2.
    r = _row(rows, variant="variant-a", model="cross-dpo", reference="hsft", scope="pooled")
    assert (r["n"], r["pairs"], r["model_only"], r["reference_only"], r["seeds"]) == ("80", "80", "18", "4", "0,1")
    assert float(r["mcnemar_p"]) == pytest.approx(stats.mcnemar_exact(18, 4))
    assert float(r["diff"]) == pytest.approx(14 / 80)
    # ... and resampling problems with both their seeds: wider than the stacked interval, still around the diff.
    low, high = float(r["diff_low_by_problem"]), float(r["diff_high_by_problem"])
    assert low <= 14 / 80 <= high and high - low > float(r["diff_high"]) - float(r["diff_low"])
    # Across seeds: mean and sample sd of the per-seed accuracies (26/40 and 20/40) and differences.
    r = _row(rows, variant="variant-a", model="cross-dpo", reference="hsft", scope="seed mean")
    assert float(r["accuracy"]) == pytest.approx(23 / 40)
    assert float(r["acc_sd"]) == pytest.approx(stats.across_seeds([26 / 40, 20 / 40]).sd)
    assert float(r["diff"]) == pytest.approx((10 / 40 + 4 / 40) / 2)
    # Every parent relation present, and self-correction as its own paired test (3 gained, 1 lost).
    r = _row(rows, variant="variant-a", model="hsft", reference="base", scope="seed 1")
    assert (r["model_only"], r["reference_only"], r["mcnemar_p"]) == ("8", "0", str(2 / 2**8))
    r = _row(rows, variant="variant-a", model="hsft+sc", reference="hsft", scope="seed 0")
    assert (r["model_only"], r["reference_only"]) == ("3", "1")
    assert float(r["mcnemar_p"]) == pytest.approx(stats.mcnemar_exact(3, 1))
    # The base model has no parent: accuracy only. Variant b, one seed: no pooled row.
    r = _row(rows, variant="variant-a", model="base", scope="seed 0")
    assert r["reference"] == "" and r["diff"] == "" and r["accuracy"] == str(8 / 40)
    assert not [r for r in rows if r["variant"] == "variant-b" and r["scope"] != "seed 0"]


def test_every_step_of_the_papers_ordering_is_tested(tmp_path):
    """base < CoT SFT < HSFT < HSFT + Cross-DPO: each step a paired row, HSFT against CoT SFT included."""
    cfg = make_run(tmp_path, "study-s0", 0, None, extra_right=4)
    Stage(cfg, "cot-sft").start().finish({"examples": 45, "steps": 12})
    _eval(cfg, "cot-sft", set(range(4, 12)))  # base right on 0-7, HSFT on 0-15
    rows = list(csv.DictReader(io.StringIO(to_csv(compare_runs([cfg.run_dir], Settings(bootstrap_samples=200))))))
    got = {(r["model"], r["reference"]) for r in rows if r["reference"]}
    assert {("cot-sft", "base"), ("hsft", "cot-sft"), ("cross-dpo", "hsft")} <= got
    r = _row(rows, model="hsft", reference="cot-sft", scope="seed 0")
    assert (r["model_only"], r["reference_only"]) == ("8", "0")  # HSFT alone on 0-3 and 12-15
    assert float(r["mcnemar_p"]) == pytest.approx(2 / 2**8)
    r = _row(rows, model="cot-sft", reference="base", scope="seed 0")
    assert (r["model_only"], r["reference_only"], r["mcnemar_p"]) == ("4", "4", "1.0")


def test_compare_markdown_and_files(runs, tmp_path):
    cmp = compare_runs(runs, Settings(bootstrap_samples=2000))
    md = to_markdown(cmp)
    for run in runs:
        assert str(run) in md
    assert ("| variant-a | 0 | train problems 48, templates kept 45, samples/problem 2, DPO pairs 24/30, sample.k 4, "
            "pairs.context ht, pairs.chosen cause_correction, cross_dpo.max_pairs all, cross_dpo.rpo_alpha 0.0 |") in md
    assert "| variant-a | HSFT + Cross-DPO | test | seed 0 | 40 | 65.0 [" in md
    line = next(x for x in md.splitlines() if x.startswith("| variant-a | HSFT + Cross-DPO | test | seed 0 |"))
    assert "| HSFT | +25.0 | [" in line and "| 12 / 2 | 0.0129 |" in line
    assert "| variant-a | HSFT + Cross-DPO | test | pooled (0,1) | 80 |" in md
    pooled = next(x for x in md.splitlines() if x.startswith("| variant-a | HSFT + Cross-DPO | test | pooled"))
    assert "; by problem [+" in pooled and "| 18 / 4 |" in pooled
    assert "| variant-a | HSFT + Cross-DPO | test | mean +- sd (0,1) | 2 | 57.5 +- 10.6 (sd over 2 seeds) |" in md
    assert "stacked" in md and "McNemar" in md and "Wilson" in md
    paths = write(cmp, tmp_path / "out")
    assert paths["png"].stat().st_size > 1000
    assert paths["csv"].read_text().splitlines()[0].startswith("variant,model,model_label,set,scope,seeds")


def test_compare_against_a_baseline_variant(runs):
    """Variant b's Cross-DPO (right on 0-13, 16-17) against variant a's (0-13, 16-27), seed 0 with seed 0."""
    cmp = compare_runs(runs, Settings(bootstrap_samples=500), baseline="variant-a")
    rows = list(csv.DictReader(io.StringIO(to_csv(cmp))))
    r = _row(rows, variant="variant-b", model="cross-dpo", reference="cross-dpo", reference_variant="variant-a")
    assert (r["scope"], r["pairs"], r["model_only"], r["reference_only"]) == ("seed 0", "40", "0", "10")
    assert float(r["mcnemar_p"]) == pytest.approx(2 / 2**10) and float(r["diff"]) == pytest.approx(-10 / 40)
    assert not [r for r in rows if r["variant"] == "variant-a" and r["reference_variant"]]
    line = next(x for x in to_markdown(cmp).splitlines() if "| HSFT + Cross-DPO (variant-a) |" in x)
    assert line.startswith("| variant-b | HSFT + Cross-DPO | test | seed 0 | 40 |") and "| 0 / 10 |" in line
    with pytest.raises(UserError, match="--baseline 'nope' is not a variant"):
        compare_runs(runs, baseline="nope")


def test_compare_cli(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--out", str(out), "--bootstrap-samples", "500",
                 "--baseline", "variant-a"]) == 0
    printed = capsys.readouterr().out
    assert "# supercorrect compare" in printed and (out / "compare.md").exists() and (out / "compare.csv").exists()
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_runs_without_recorded_identity_are_not_pooled(runs):
    """Folders from before manifests recorded name, variant and seed: each is its own variant, seed unknown."""
    import json

    for run in runs[:2]:
        for m in run.glob("*/manifest.json"):
            man = json.loads(m.read_text())
            man.pop("run")
            m.write_text(json.dumps(man))
    cmp = compare_runs(runs[:2], Settings(bootstrap_samples=200))
    assert [(r.variant, r.seed) for r in cmp.runs] == [(str(runs[0]), None), (str(runs[1]), None)]
    assert not [r for r in cmp.rows if r["scope"] == "pooled"]
    assert f"| {runs[0]} | {runs[0]} | ? |" in to_markdown(cmp)


def test_compare_rejects_two_runs_of_one_variant_and_seed(tmp_path):
    a = make_run(tmp_path, "x", 0, "same", 2).run_dir
    b = make_run(tmp_path, "y", 0, "same", 3).run_dir
    with pytest.raises(UserError, match="variant 'same' has two runs with seed 0"):
        compare_runs([a, b])
    with pytest.raises(UserError, match="not a run folder"):
        compare_runs([tmp_path])


def test_report_has_intervals_and_paired_tests(tmp_path):
    cfg = make_run(tmp_path, "one", 0, None, extra_right=12)
    report.run(cfg)
    md = (cfg.run_dir / "report" / "report.md").read_text()
    assert "test (greedy % [95% CI])" in md
    assert ("Variant: `one`; training seed: 0; data budget: train problems 48, templates kept 45, samples/problem 2, "
            "DPO pairs 24/30") in md
    wil = stats.wilson_interval(26, 40)
    assert f"65.0 [{100 * wil.low:.1f}, {100 * wil.high:.1f}] (n=40)" in md
    line = next(x for x in md.splitlines() if x.startswith("| HSFT + Cross-DPO | HSFT | test |"))
    assert "| 40 | 65.0 | 40.0 | +25.0 |" in line and line.endswith("| 12 | 2 | 0.0129 |")
    sc = next(x for x in md.splitlines() if x.startswith("| HSFT | test | 40.0 | 45.0 |"))
    assert f"| 3 | 1 | {stats.format_p(stats.mcnemar_exact(3, 1))} |" in sc
    for png in ("accuracy.png", "paired.png", "self_correction.png"):
        assert (cfg.run_dir / "report" / png).stat().st_size > 1000


def test_error_location_rates_and_paired_test(tmp_path):
    """Error location from the self-correction rows: rate over each model's located wrong solutions (Wilson), and
    Cross-DPO against HSFT paired on the problems both answered wrong and the teacher located in both."""
    cfg = make_run(tmp_path, "study-s0", 0, None, extra_right=4)

    def sc_rows(tag: str, wrong: range, located: set[int], unlocated: frozenset[int] = frozenset()) -> None:
        rows = [{"id": PROBLEMS[i].id, "before": i not in wrong, "after": False, "trace": "",
                 "model_step": 2 if i in located else 1, "teacher_step": None if i in unlocated else 2}
                for i in range(N)]  # fmt: skip
        for r in rows:  # right answers carry no teacher verdict (stages/evaluate.py)
            if r["before"]:
                r.pop("teacher_step")
        write_jsonl(cfg.run_dir / f"eval-{tag}" / "test" / "selfcorrect.jsonl", rows)

    # HSFT wrong on 16-39: the teacher locates 22 of them (not 38, 39), HSFT names the same step on 16-17.
    sc_rows("hsft", range(16, 40), located={16, 17}, unlocated={38, 39})
    # Cross-DPO wrong on 20-39 (all located): same step on 20-29.
    sc_rows("cross-dpo", range(20, 40), located=set(range(20, 30)))
    cmp = compare_runs([cfg.run_dir], Settings(bootstrap_samples=200))
    rows = list(csv.DictReader(io.StringIO(to_csv(cmp))))
    loc = [r for r in rows if r["measure"] == "error location"]
    r = _row(loc, model="hsft", reference="hsft+guess", scope="seed 0")
    assert (r["n"], r["correct"]) == ("22", "2")
    r = _row(loc, model="cross-dpo", reference="hsft", scope="seed 0")
    assert (r["n"], r["correct"]) == ("20", "10")
    # Both wrong and located: 20-37 (18 problems); Cross-DPO alone on 20-29 (10), HSFT alone on none.
    assert (r["pairs"], r["model_only"], r["reference_only"]) == ("18", "10", "0")
    assert float(r["mcnemar_p"]) == pytest.approx(stats.mcnemar_exact(10, 0))
    wil = stats.wilson_interval(10, 20)
    assert (float(r["acc_low"]), float(r["acc_high"])) == pytest.approx((wil.low, wil.high))
    # The chance baseline on the same solutions: the teacher's step is 2 on all of them, so always naming step 2
    # is right on every one; both models are below it (a model must beat this row to be said to locate errors).
    g = _row(loc, model="cross-dpo+guess", scope="seed 0")
    assert (g["n"], g["correct"], g["reference"]) == ("20", "20", "")
    r = _row(loc, model="cross-dpo", reference="cross-dpo+guess", scope="seed 0")
    assert (r["pairs"], r["model_only"], r["reference_only"]) == ("20", "0", "10")
    assert float(r["mcnemar_p"]) == pytest.approx(stats.mcnemar_exact(0, 10))
    assert _row(loc, model="hsft", reference="hsft+guess", scope="seed 0")["reference_only"] == "20"
    # Accuracy rows are unchanged by the location rows, and the markdown has its own section.
    assert _row(rows, measure="accuracy", model="hsft", scope="seed 0")["correct"] == "16"
    md = to_markdown(cmp)
    assert "## Error location (self-correction pass)" in md
    assert "| HSFT + Cross-DPO | test | seed 0 | 20 | 50.0 [" in md
    assert "| HSFT + Cross-DPO: always the commonest step | test | seed 0 | 20 | 100.0 [" in md


def test_report_error_location_cell_shows_chance_baseline():
    """The run report puts the located rate beside always naming the commonest step; a summary written before
    the baseline existed shows the rate alone."""
    from supercorrect.report import _located_cell

    loc = {"teacher_located": 40, "located_rate": 0.1, "constant_guess_step": 2, "constant_guess_rate": 0.625}
    assert _located_cell(loc) == "10.0 (of 40; always step 2: 62.5)"
    assert _located_cell({"teacher_located": 40, "located_rate": 0.1}) == "10.0 (of 40)"
    assert _located_cell({}) == "-"
