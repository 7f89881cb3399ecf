"""The whole pipeline on a tiny random model of the real architecture: every stage runs, writes its artifacts
and manifest, a second run skips finished stages, and a config change redoes exactly the stages it affects."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from planting import plant_wrong_solutions

from supercorrect import stats
from supercorrect.cli import main
from supercorrect.config import load_config
from supercorrect.errors import UserError
from supercorrect.io import read_json, read_jsonl
from supercorrect.pipeline import run_pipeline


def make_config(tmp_path: Path, model: Path, stages: list[str], **extra) -> Path:
    cfg = {
        "name": "tiny",
        "run_root": str(tmp_path / "runs"),
        "student": {"model": str(model)},
        "teacher": {"kind": "reference"},
        "generation": {"batch_size": 8, "max_new_tokens": 24},
        "data": {
            "train": {"kind": "synthetic", "split": "train", "n": 12, "max_steps": 3},
            "test": {"kind": "synthetic", "split": "test", "n": 6, "max_steps": 3},
        },
        "hsft": {"epochs": 1, "batch_size": 4, "max_length": 384, "learning_rate": 1e-3, "logging_steps": 1},
        "sample": {"k": 2, "max_new_tokens": 24},
        "cross_dpo": {"epochs": 1, "batch_size": 2, "max_length": 512},
        "evaluate": {"sets": ["test"], "samples": 2, "self_correction": ["hsft"], "error_location": True},
        "stages": stages,
        **extra,
    }
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_stage1_pipeline_resume_and_fingerprints(tmp_path, tiny_model_dir, capsys):
    stages = ["eval-base", "templates", "hsft", "eval-hsft", "report"]
    path = make_config(tmp_path, tiny_model_dir, stages)
    cfg = load_config(path)
    run_pipeline(cfg)
    run = cfg.run_dir
    for s in stages:
        assert (run / s / "manifest.json").exists(), s
    kept = read_jsonl(run / "templates" / "hsft.jsonl")
    assert len(kept) == 12  # the reference teacher's templates all parse and verify
    assert kept[0]["prompt"].startswith("Solve the following math problem in a step-by-step XML format")
    assert (run / "hsft" / "model" / "config.json").exists()
    assert "HSFT student" in (run / "hsft" / "model" / "README.md").read_text()
    samples = read_jsonl(run / "eval-hsft" / "test" / "samples.jsonl")
    assert len(samples) == 6 * 3  # greedy + 2 samples per problem
    assert {r["reason"] for r in samples} <= {"correct", "no_answer", "unparsable", "wrong", "timeout"}
    summary = read_json(run / "eval-hsft" / "test" / "summary.json")
    assert "pass_at_k" in summary and "maj_at_2" in summary and "self_correction" in summary
    # Error location and its chance baseline agree with the per-problem rows they summarize.
    loc = summary["self_correction"]["error_location"]
    judged = [r for r in read_jsonl(run / "eval-hsft" / "test" / "selfcorrect.jsonl")
              if not r["before"] and r.get("teacher_step") is not None]  # fmt: skip
    assert loc["teacher_located"] == len(judged)
    assert loc["model_named_a_step"] == sum(1 for r in judged if r["model_step"] is not None)
    if judged:
        step, hits = stats.constant_guess([r["teacher_step"] for r in judged])
        assert (loc["constant_guess_step"], loc["constant_guess_rate"]) == (step, hits / len(judged))
    else:
        assert (loc["constant_guess_step"], loc["constant_guess_rate"]) == (None, None)
    report = (run / "report" / "report.md").read_text()
    assert "HSFT" in report and "rule-based" in report
    # Intervals from the per-problem rows, and HSFT tested against the base model on the same 6 problems.
    assert "test (greedy % [95% CI])" in report and "| HSFT | base (HT prompt) | test | 6 |" in report
    assert (run / "report" / "accuracy.png").stat().st_size > 1000
    assert "![HSFT training curves](curves-hsft.png)" in report
    page = (run / "report" / "report.html").read_text()
    # accuracy, paired differences, self-correction and the HSFT curves: every plot of report.md, inline
    assert page.count('src="data:image/png;base64,') == report.count('.png)') == 4 and "Stage-2 browser" not in page
    out = capsys.readouterr().out
    assert "base (HT prompt)" in out

    # Second run: everything up to date (only the report is rewritten).
    mtimes = {s: (run / s / "manifest.json").stat().st_mtime for s in stages}
    run_pipeline(cfg)
    for s in stages[:-1]:
        assert (run / s / "manifest.json").stat().st_mtime == mtimes[s], s

    # Changing the HSFT config redoes hsft and the evaluation of its model, not the base evaluation.
    run_pipeline(load_config(path, {"hsft.learning_rate": 5e-4}))
    assert (run / "eval-base" / "manifest.json").stat().st_mtime == mtimes["eval-base"]
    assert (run / "templates" / "manifest.json").stat().st_mtime == mtimes["templates"]
    assert (run / "hsft" / "manifest.json").stat().st_mtime > mtimes["hsft"]
    assert (run / "eval-hsft" / "manifest.json").stat().st_mtime > mtimes["eval-hsft"]


def test_self_correction_sets(tmp_path, tiny_model_dir):
    """evaluate.self_correction_sets limits self-correction to some of the evaluated sets; a set that is not
    evaluated is a one-line error."""
    path = make_config(tmp_path, tiny_model_dir, ["eval-base"])
    overrides = {
        "data.other": {"kind": "synthetic", "split": "test", "n": 3, "seed": 1},
        "evaluate.sets": ["test", "other"],
        "evaluate.samples": 0,
        "evaluate.self_correction": ["base"],
        "evaluate.self_correction_sets": ["other"],
    }
    cfg = load_config(path, overrides)
    run_pipeline(cfg)
    summary = read_json(cfg.run_dir / "eval-base" / "summary.json")
    assert "self_correction" in summary["other"] and "self_correction" not in summary["test"]
    bad = load_config(path, {**overrides, "evaluate.self_correction_sets": ["train"], "name": "bad"})
    with pytest.raises(UserError, match="self_correction_sets: 'train' is not in evaluate.sets"):
        run_pipeline(bad)


def test_stage_alone_needs_its_input(tmp_path, tiny_model_dir, capsys):
    path = make_config(tmp_path, tiny_model_dir, ["hsft"])
    assert main(["hsft", str(path)]) == 2
    assert "needs the output of stage 'templates'" in capsys.readouterr().err


@pytest.mark.slow
def test_stage2_and_baselines_tiny(tmp_path, tiny_model_dir):
    """Stage 2 on the tiny model, with wrong solutions planted into the sample stage's output so that the
    teacher has something to correct regardless of what the random model writes."""
    stages = ["templates", "hsft", "sample"]
    path = make_config(tmp_path, tiny_model_dir, stages)
    cfg = load_config(path)
    run_pipeline(cfg)
    run = cfg.run_dir
    plant_wrong_solutions(cfg, 6)
    run_pipeline(cfg, only=["correct", "pairs", "cross-dpo", "cot-sft", "instance-dpo", "report"])
    pairs = read_jsonl(run / "pairs" / "pairs.jsonl")
    # cross_dpo.max_pairs trains on the first N pairs of the artifact (batch 2: 2 steps instead of 3).
    run_pipeline(load_config(path, {"cross_dpo.max_pairs": 4}), only=["cross-dpo"])
    counts = read_json(run / "cross-dpo" / "manifest.json")["counts"]
    assert counts == {"pairs": 4, "pairs_available": 6, "steps": 2}
    assert len(pairs) == 6
    assert {r["locator_reason"] for r in read_jsonl(run / "correct" / "corrections.jsonl")} == {"arithmetic_error"}
    assert read_json(run / "correct" / "manifest.json")["counts"]["k_distribution"] == {"2": 6}
    assert "## First-error location" in (run / "report" / "report.md").read_text()
    assert all(p["step"] == 2 and p["chosen"].startswith("<Step2>") for p in pairs)
    assert all(p["prompt"].rstrip().endswith("</Step1>") for p in pairs)
    assert (run / "cross-dpo" / "model" / "config.json").exists()
    assert (run / "cot-sft" / "model" / "config.json").exists()
    assert (run / "instance-dpo" / "model" / "config.json").exists()
    # Every trained model's card names its run, variant, training seed and data budget (issue 12).
    for name in ("hsft", "cross-dpo", "cot-sft", "instance-dpo"):
        card = (run / name / "model" / "README.md").read_text()
        for want in ("- run: `tiny`", "- variant: `tiny`", "- training seed: 0", "| training problems | 12 |",
                     "| sample.k | 2 |", "| pairs.context | ht |", "| pairs.chosen | cause_correction |",
                     "| correct.missing_step | own_k |", "| cross_dpo.rpo_alpha | 0.0 |"):  # fmt: skip
            assert want in card, (name, want)
    xdpo_card = (run / "cross-dpo" / "model" / "README.md").read_text()
    assert "| trained on | 4 pairs, 6 pairs available |" in xdpo_card and "| cross_dpo.max_pairs | 4 |" in xdpo_card
    assert "| pairs built | 6 |" in xdpo_card
    man = read_json(run / "pairs" / "manifest.json")
    assert man["counts"]["prefix_to_completion_ratio"] > 1
    # The report draws every training stage's curves and writes the HTML page with the stage-2 browser.
    for name in ("hsft", "cross-dpo", "cot-sft", "instance-dpo"):
        assert (run / name / "log_history.json").exists(), name
        assert (run / "report" / f"curves-{name}.png").exists(), name
    assert (run / "report" / "report.html").read_text().count('<article class="item"') == 6
