"""The `Recipe` type (no imports from the rest of the package, so every layer may use it)."""

from __future__ import annotations

from dataclasses import dataclass

# Sections every recipe reads: the model, the teacher, generation settings and the problem sets.
COMMON_SECTIONS = ("student", "teacher", "generation", "data", "evaluate")


@dataclass(frozen=True)
class Recipe:
    name: str  # what `recipe:` in a run config says
    summary: str  # one line for `supercorrect recipes`
    stages: tuple[str, ...]  # stage names (stages/registry.py), in the order a run executes them
    sections: tuple[str, ...]  # run-config sections the stages read (beyond these, a config's sections are unused)
    paper: str = ""  # where the method comes from
    # (model, control) pairs of eval tags (`eval-<tag>` stages of this recipe): the arm the method's claim rests on
    # and what it must beat beyond the base student (its paper's ablation). Stage `recipe-table` tests each pair
    # paired on the same problems; every trained model is also tested against the base student.
    controls: tuple[tuple[str, str], ...] = ()
