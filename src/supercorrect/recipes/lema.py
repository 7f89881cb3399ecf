"""LEMA, learning from mistakes (An et al. 2024, arXiv 2310.20689): SFT on correction triplets {incorrect step,
explanation, corrected solution from that step} mixed with ordinary solutions, with the ablation that asks how
much of the gain is the error signal: triplets vs the corrected solutions alone vs more plain solutions, at equal
tokens, and LEMA's "sense of error" (perplexity of wrong vs corrected solutions) before and after training.

The wrong solutions come from SuperCorrect's `sample` stage (the HSFT student, which writes the numbered steps a
teacher can check) and are located and corrected by the `correct` stage's teacher; the three arms then train the
base student.
"""

from __future__ import annotations

from .base import COMMON_SECTIONS, Recipe

LEMA_ARMS = ("lema", "eval-lema", "lema-corrected", "eval-lema-corrected", "lema-plain", "eval-lema-plain")

LEMA = Recipe(
    name="lema",
    summary="LEMA: SFT on correction triplets vs corrected solutions alone vs more plain solutions (equal tokens), "
    "with the sense-of-error perplexity gap",
    stages=("eval-base", "templates", "hsft", "sample", "correct", "lema-data", *LEMA_ARMS, "lema-sense", "report"),
    sections=(*COMMON_SECTIONS, "templates", "hsft", "sample", "correct", "lema"),
    paper="An et al., Learning From Mistakes Makes LLM Better Reasoner, 2024 (arXiv 2310.20689)",
    controls=(("lema", "lema-plain"), ("lema", "lema-corrected")),  # the error signal, or one more solution?
)
