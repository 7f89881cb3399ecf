"""Issue 12: the model cards, the report and `supercorrect compare` name the run, variant, training seed and data
budget behind every number. Written from stage manifests as the stages write them (no model needed): the card of a
trained model and the run report are read back and searched for each field."""

from __future__ import annotations

from pathlib import Path

from supercorrect import report
from supercorrect.compare import load_run
from supercorrect.config import RunConfig
from supercorrect.stages import Stage, knobs
from supercorrect.stages.common import model_card, run_budget

KNOBS = {"sample.k": 3, "correct.missing_step": "last_step", "pairs.context": "both", "pairs.chosen": "student_form",
         "cross_dpo.max_pairs": 7, "cross_dpo.rpo_alpha": 0.5}  # fmt: skip


def _cfg(root: Path) -> RunConfig:
    return RunConfig.model_validate({
        "name": "prov-s3", "seed": 3, "variant": "xdpo-both", "run_root": str(root),
        "data": {"train": {"kind": "synthetic", "split": "train", "n": 20, "max_steps": 3}},
        "sample": {"k": 3}, "correct": {"missing_step": "last_step"},
        "pairs": {"context": "both", "chosen": "student_form"},
        "cross_dpo": {"max_pairs": 7, "rpo_alpha": 0.5},
    })  # fmt: skip


def _stages(cfg: RunConfig) -> None:
    """The manifests the stages before a DPO stage write, with their counts."""
    Stage(cfg, "templates").start().finish({"problems": 20, "kept": 18, "dropped": 2, "dropped_by_reason": {}})
    Stage(cfg, "hsft").start().finish({"examples": 18, "steps": 5})
    Stage(cfg, "sample").start().finish({"problems": 20, "samples": 60, "correct": 30, "wrong_kept": 25})
    Stage(cfg, "correct").start().finish({"rows": 25})
    Stage(cfg, "pairs").start().finish({"corrections": 25, "pairs": 11, "dropped_by_reason": {},
                                        "context": "both", "chosen": "student_form"})  # fmt: skip
    Stage(cfg, "cross-dpo").start().finish({"pairs": 7, "pairs_available": 11, "steps": 2})


def test_every_manifest_records_the_knobs(tmp_path):
    cfg = _cfg(tmp_path)
    assert knobs(cfg) == KNOBS
    man = Stage(cfg, "templates").start().finish({})
    assert man["knobs"] == KNOBS and man["run"] == {"name": "prov-s3", "variant": "xdpo-both", "seed": 3}


def test_model_card_names_run_variant_seed_and_budget(tmp_path):
    cfg = _cfg(tmp_path)
    _stages(cfg)
    assert run_budget(cfg) == {"training problems": 20, "training set": "train", "templates kept": 18,
                               "pairs built": 11, **KNOBS}  # fmt: skip
    card = model_card(cfg, "prov-s3: Cross-DPO student", "hsft/model", "DPO on the pairs.",
                      {"pairs": 7, "pairs available": 11}, {"beta": 0.1}, {"steps": 2, "loss_curve": [1.0]})  # fmt: skip
    for want in ("- run: `prov-s3`", "- variant: `xdpo-both`", "- training seed: 3", "| trained on | 7 pairs, 11 pairs "
                 "available |", "| training problems | 20 |", "| templates kept | 18 |", "| sample.k | 3 |",
                 "| pairs built | 11 |", "| pairs.context | both |", "| pairs.chosen | student_form |",
                 "| correct.missing_step | last_step |", "| cross_dpo.max_pairs | 7 |",
                 "| cross_dpo.rpo_alpha | 0.5 |"):  # fmt: skip
        assert want in card, want
    assert "loss_curve" not in card
    # Before stage 2 exists (the HSFT card): the knobs come from the config, no pairs count is claimed.
    early = _cfg(tmp_path / "early")
    Stage(early, "templates").start().finish({"problems": 20, "kept": 18})
    assert "pairs built" not in run_budget(early) and run_budget(early)["sample.k"] == 3


def test_report_and_compare_name_the_budget(tmp_path):
    cfg = _cfg(tmp_path)
    _stages(cfg)
    info = load_run(cfg.run_dir)
    assert (info.name, info.variant, info.seed) == ("prov-s3", "xdpo-both", 3)
    assert {k: info.budget[k] for k in KNOBS} == KNOBS
    report.run(cfg)
    md = (cfg.run_dir / "report" / "report.md").read_text()
    assert md.startswith("# supercorrect report: prov-s3\n")
    line = next(x for x in md.splitlines() if x.startswith("Variant:"))
    assert line.startswith("Variant: `xdpo-both`; training seed: 3; data budget: train problems 20, templates kept 18")
    for want in ("samples/problem 3", "DPO pairs 7/11", "sample.k 3", "correct.missing_step last_step",
                 "pairs.context both", "pairs.chosen student_form", "cross_dpo.max_pairs 7", "cross_dpo.rpo_alpha 0.5"):
        assert want in line, want
