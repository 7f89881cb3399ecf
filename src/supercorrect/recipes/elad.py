"""ELAD (Zhang et al., ACL Findings 2024, "ELAD: Explanation-Guided Large Language Models Active Distillation"):
spend the teacher only on the problems the student is most uncertain about (EGSS: inter-path answer entropy +
intra-path step-ablation uncertainty), have it revise the student's own rationale from its first wrong step
(CLAER), and SFT on the revisions. Trained beside entropy-only and random selection at equal total compute, so the
report answers: does the selection pay for its own sampling?
"""

from __future__ import annotations

from .base import COMMON_SECTIONS, Recipe

ELAD = Recipe(
    name="elad",
    summary="ELAD: uncertainty-selected problems (EGSS), teacher-revised rationales (CLAER), SFT; vs random/entropy",
    stages=(
        "eval-base", "elad-select", "elad-revise",
        "elad-sft", "eval-elad-sft", "elad-sft-entropy", "eval-elad-sft-entropy",
        "elad-sft-random", "eval-elad-sft-random", "elad-report", "report",
    ),  # fmt: skip
    sections=(*COMMON_SECTIONS, "elad", "hsft"),
    paper="Zhang et al., ELAD, ACL Findings 2024 (arXiv 2402.13098)",
    controls=(("elad-sft", "elad-sft-random"), ("elad-sft", "elad-sft-entropy")),  # does the selection pay?
)
