"""Explain-based distillation (Li & Mooney 2024): the teacher explains a known-correct solution (grounded; in this
toolkit, SuperCorrect's template extraction, stage `templates`) versus solves the problem itself (solve-based,
stage `solve-templates`), on the same problems with one request each; each arm's templates train the base student
with the same settings, and the report gives the share of teacher outputs that were wrong in each arm.

With the rule-based reference teacher only the grounded arm exists (it cannot solve): the solve-based stages
print a notice and record the arm as skipped.
"""

from __future__ import annotations

from .base import COMMON_SECTIONS, Recipe

EXPLAIN = Recipe(
    name="explain",
    summary="explain-based distillation: teacher explains the reference (grounded) vs solves alone, same budget",
    stages=("eval-base", "templates", "hsft", "eval-hsft", "solve-templates", "solve-sft", "eval-solve-sft", "report"),
    sections=(*COMMON_SECTIONS, "templates", "hsft"),
    paper="Li & Mooney, explanation-based distillation of reasoning, 2024",
    controls=(("hsft", "solve-sft"),),  # grounded (explain) vs solve-based templates
)
