"""Stage `lema-plain`, LEMA ablation arm: the same base rows plus more plain (reference) solutions of the same
problems at the triplets' completion tokens: what the triplets' tokens buy when spent on ordinary solutions."""

from __future__ import annotations

from .common import StageDef
from .lema import run_variant, variant_stage

STAGE = StageDef(
    "lema-plain", "LEMA ablation: SFT on more plain solutions, at the triplets' tokens",
    lambda cfg: variant_stage(cfg, "lema-plain"), lambda cfg: run_variant(cfg, "lema-plain"), trains=True,
)  # fmt: skip
