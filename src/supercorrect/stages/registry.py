"""Every stage a run can name, in the order `supercorrect stages` lists them.

A new stage is a module in this package that declares `STAGE = StageDef(...)` plus one line below; a stage that
trains a model (`trains=True`) gets its `eval-<name>` stage here automatically. Which stages a method runs, and in
what order, is its recipe's business (`recipes/`).
"""

from __future__ import annotations

from .. import report
from . import (
    correct,
    cot_sft,
    cross_dpo,
    elad_report,
    elad_revise,
    elad_select,
    elad_sft,
    eval_solve_sft,
    hsft,
    hsft_more,
    instance_dpo,
    lema,
    lema_corrected,
    lema_data,
    lema_plain,
    lema_sense,
    pairs,
    recipe_table,
    reer_report,
    reer_search,
    reer_sft,
    sample,
    solve_sft,
    solve_templates,
    templates,
)
from . import evaluate as ev
from .common import StageDef

# One entry per stage (a module's STAGE, or its STAGES when it declares one per arm), in listing order.
_DEFS: tuple[StageDef, ...] = (
    # SuperCorrect and its ablation baselines
    templates.STAGE, hsft.STAGE, sample.STAGE, correct.STAGE, pairs.STAGE, cross_dpo.STAGE, hsft_more.STAGE,
    cot_sft.STAGE, instance_dpo.STAGE,
    # ELAD
    elad_select.STAGE, elad_revise.STAGE, *elad_sft.STAGES, elad_report.STAGE,
    # LEMA
    lema_data.STAGE, lema.STAGE, lema_corrected.STAGE, lema_plain.STAGE, lema_sense.STAGE,
    # REER
    reer_search.STAGE, *reer_sft.STAGES, reer_report.STAGE,
    # explain-based distillation (the grounded arm is `templates`), and the recipes' side-by-side table
    solve_templates.STAGE, solve_sft.STAGE, eval_solve_sft.STAGE, recipe_table.STAGE,
)  # fmt: skip


def _build() -> dict[str, StageDef]:
    defs = [ev.stage_def("base"), ev.stage_def("base", "cot")]
    for d in _DEFS:
        defs.append(d)
        if d.trains:  # a stage that trains a model gets its eval-<name> stage right after it
            defs.append(ev.stage_def(d.name))
    defs.append(report.STAGE)
    return {d.name: d for d in defs}


STAGES: dict[str, StageDef] = _build()
