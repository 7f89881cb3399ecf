"""REER (Wang et al. 2025, "Reverse-Engineered Reasoning for Open-Ended Generation", arXiv 2509.06160): for each
(problem, known good solution), search a thinking trajectory that makes the solution likely under the student,
then SFT on problem -> trajectory then solution. Measures what the paper leaves open: how much of the solution the
trajectory leaks, and whether a better search score gives a better trained student (two search budgets + draft).
"""

from __future__ import annotations

from .base import COMMON_SECTIONS, Recipe

REER = Recipe(
    name="reer",
    summary="REER: search thinking trajectories that lower the solution's perplexity, SFT on them; leakage report",
    stages=(
        "eval-base", "reer-search",
        "reer-sft-draft", "eval-reer-sft-draft", "reer-sft-low", "eval-reer-sft-low",
        "reer-sft-high", "eval-reer-sft-high", "reer-report", "report",
    ),  # fmt: skip
    sections=(*COMMON_SECTIONS, "reer", "hsft"),
    paper="Wang et al., REER, 2025 (arXiv 2509.06160)",
    controls=(("reer-sft-high", "reer-sft-draft"), ("reer-sft-high", "reer-sft-low")),  # does more search help?
)
