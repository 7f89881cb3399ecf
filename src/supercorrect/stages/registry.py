"""Every stage a run can name, in the order `supercorrect stages` lists them.

A new stage is a module in this package that declares `STAGE = StageDef(...)` plus one line below; a stage that
trains a model (`trains=True`) gets its `eval-<name>` stage here automatically. Which stages a method runs, and in
what order, is its recipe's business (`recipes/`).
"""

from __future__ import annotations

from .. import report
from . import correct, cot_sft, cross_dpo, hsft, instance_dpo, pairs, sample, templates
from . import evaluate as ev
from .common import StageDef

_MODULES = (templates, hsft, sample, correct, pairs, cross_dpo, cot_sft, instance_dpo)

# Issue 14 recipes: LEMA and explain-based distillation.
from . import (  # noqa: E402
    eval_solve_sft,
    lema,
    lema_corrected,
    lema_data,
    lema_plain,
    lema_sense,
    recipe_table,
    solve_sft,
    solve_templates,
)

_MODULES += (lema_data, lema, lema_corrected, lema_plain, lema_sense, solve_templates, solve_sft, eval_solve_sft, recipe_table)


def _build() -> dict[str, StageDef]:
    defs = [ev.stage_def("base"), ev.stage_def("base", "cot")]
    for module in _MODULES:
        defs.append(module.STAGE)
        if module.STAGE.trains:
            defs.append(ev.stage_def(module.STAGE.name))
    defs.append(report.STAGE)
    return {d.name: d for d in defs}


STAGES: dict[str, StageDef] = _build()
