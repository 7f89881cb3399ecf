"""`compare-recipes`: SuperCorrect and the neighbouring recipes on the same training problems, student and teacher, in one
run folder (shared stages such as templates and hsft run once), then one table (stage `recipe-table`): accuracy of
every trained model with its interval, paired tests against the base student and each recipe's `controls`, and per
recipe the time and the teacher and student tokens it spent.

A recipe added to the toolkit joins the comparison by adding it to `COMPARED` below.
"""

from __future__ import annotations

from .base import Recipe
from .elad import ELAD
from .explain import EXPLAIN
from .lema import LEMA
from .reer import REER
from .supercorrect import SUPERCORRECT

COMPARED = (SUPERCORRECT, ELAD, LEMA, REER, EXPLAIN)


def _union(items: list[tuple[str, ...]]) -> tuple[str, ...]:
    out: list[str] = []
    for names in items:
        out += [n for n in names if n not in out and n != "report"]
    return tuple(out)


COMPARE = Recipe(
    name="compare-recipes",
    summary="every recipe on the same problems, student and teacher, and one table of accuracy, tokens and time",
    stages=(*_union([r.stages for r in COMPARED]), "recipe-table", "report"),
    sections=_union([r.sections for r in COMPARED]),
    paper="; ".join(r.paper for r in COMPARED),
)
