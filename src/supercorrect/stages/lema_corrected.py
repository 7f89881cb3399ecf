"""Stage `lema-corrected`, LEMA ablation arm: the same base rows plus the corrected solutions alone (no incorrect
step, no explanation) at the triplets' completion tokens. Is the gain the error signal or one more solution?"""

from __future__ import annotations

from .common import StageDef
from .lema import run_variant, variant_stage

STAGE = StageDef(
    "lema-corrected", "LEMA ablation: SFT on the corrected solutions alone, at the triplets' tokens",
    lambda cfg: variant_stage(cfg, "lema-corrected"), lambda cfg: run_variant(cfg, "lema-corrected"), trains=True,
)  # fmt: skip
