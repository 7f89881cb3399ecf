"""The ablation baselines of SuperCorrect's Table 2 as recipes of their own, each with what it needs before it.

`cot-sft`: SFT on plain chain-of-thought solutions instead of hierarchical templates (vs HSFT).
`instance-dpo`: DPO on whole correct vs wrong solutions instead of one-step corrections (vs Cross-DPO).
"""

from __future__ import annotations

from .base import COMMON_SECTIONS, Recipe
from .supercorrect import HSFT_STAGES, PAPER

COT_SFT = Recipe(
    name="cot-sft",
    summary="baseline: SFT on plain CoT solutions of the problems HSFT trains on, evaluated with the CoT prompt",
    stages=("eval-base", "templates", "cot-sft", "eval-cot-sft", "report"),
    sections=(*COMMON_SECTIONS, "templates", "hsft"),
    paper=PAPER + ", Table 2",
)

INSTANCE_DPO = Recipe(
    name="instance-dpo",
    summary="baseline: HSFT, then DPO on whole correct vs wrong sampled solutions",
    stages=(*HSFT_STAGES, "sample", "instance-dpo", "eval-instance-dpo", "report"),
    sections=(*COMMON_SECTIONS, "templates", "hsft", "sample", "cross_dpo"),
    paper=PAPER + ", Table 2",
)
