"""Every recipe, by name, in the order `supercorrect recipes` lists them. A new method: one line here."""

from __future__ import annotations

from . import baselines, supercorrect
from .base import Recipe

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (supercorrect.SUPERCORRECT, supercorrect.STAGE1, baselines.COT_SFT, baselines.INSTANCE_DPO)
}
# Issue 14 recipes: LEMA and explain-based distillation.
from . import compare_recipes, explain, lema  # noqa: E402

RECIPES.update({r.name: r for r in (lema.LEMA, explain.EXPLAIN, compare_recipes.COMPARE)})
