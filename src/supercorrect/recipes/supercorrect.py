"""SuperCorrect (Yang et al., ICLR 2025, arXiv 2410.09008): HSFT, then Cross-DPO, with the paper's ablation
baselines (Table 2: CoT SFT, instance-level DPO) evaluated on the same sets, and the report.

`stage1` is the first half alone: hierarchical thought-template SFT.

`EQUAL_COMPUTE_STAGES` (the HSFT student trained further for as many steps as Cross-DPO took, and its evaluation)
belong to this recipe but are optional, not in its default list, since they cost another training run: a config
turns them on by listing its stages with `stages:`, e.g. `STUDY_STAGES` as configs/study.yaml does.
"""

from __future__ import annotations

from .base import COMMON_SECTIONS, Recipe

PAPER = "Yang et al., SuperCorrect, ICLR 2025 (arXiv 2410.09008)"
HSFT_STAGES = ("eval-base", "templates", "hsft", "eval-hsft")
CROSS_DPO_STAGES = ("sample", "correct", "pairs", "cross-dpo", "eval-cross-dpo")
BASELINE_STAGES = ("cot-sft", "eval-cot-sft", "instance-dpo", "eval-instance-dpo")
EQUAL_COMPUTE_STAGES = ("hsft-more", "eval-hsft-more")  # optional: after cross-dpo, whose step count it reads

SUPERCORRECT = Recipe(
    name="supercorrect",
    summary="HSFT + Cross-DPO with the ablation baselines (CoT SFT, instance DPO) and the report",
    stages=(*HSFT_STAGES, *CROSS_DPO_STAGES, *BASELINE_STAGES, "report"),
    sections=(*COMMON_SECTIONS, "templates", "hsft", "sample", "correct", "cross_dpo"),
    paper=PAPER,
    # Table 2 of the paper: Cross-DPO over its HSFT start and over instance DPO; HSFT over plain CoT SFT.
    controls=(("cross-dpo", "hsft"), ("cross-dpo", "instance-dpo"), ("hsft", "cot-sft")),
)

STAGE1 = Recipe(
    name="stage1",
    summary="SuperCorrect stage 1 alone: hierarchical thought-template SFT (HSFT), evaluated, and the report",
    stages=(*HSFT_STAGES, "report"),
    sections=(*COMMON_SECTIONS, "templates", "hsft"),
    paper=PAPER,
)

# The recipe's stages with the equal-compute control: what a config lists in `stages:` to turn it on.
STUDY_STAGES = (*HSFT_STAGES, *CROSS_DPO_STAGES, *EQUAL_COMPUTE_STAGES, *BASELINE_STAGES, "report")
