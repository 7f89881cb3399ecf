"""Every recipe, by name, in the order `supercorrect recipes` lists them. A new method: one line here."""

from __future__ import annotations

from . import baselines, compare_recipes, elad, explain, lema, reer, supercorrect
from .base import Recipe

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        supercorrect.SUPERCORRECT,
        supercorrect.STAGE1,
        baselines.COT_SFT,
        baselines.INSTANCE_DPO,
        elad.ELAD,
        lema.LEMA,
        reer.REER,
        explain.EXPLAIN,
        compare_recipes.COMPARE,
    )
}
