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
    hsft,
    instance_dpo,
    pairs,
    reer_report,
    reer_search,
    reer_sft,
    sample,
    templates,
)
from . import evaluate as ev
from .common import StageDef

_MODULES = (templates, hsft, sample, correct, pairs, cross_dpo, cot_sft, instance_dpo)


def _build() -> dict[str, StageDef]:
    defs = [ev.stage_def("base"), ev.stage_def("base", "cot")]
    for module in _MODULES:
        defs.append(module.STAGE)
        if module.STAGE.trains:
            defs.append(ev.stage_def(module.STAGE.name))
    # recipes_b (ELAD, REER): their stages, the per-arm training stages each followed by its evaluation
    for d in (elad_select.STAGE, elad_revise.STAGE, *elad_sft.STAGES, elad_report.STAGE,
              reer_search.STAGE, *reer_sft.STAGES, reer_report.STAGE):  # fmt: skip
        defs.append(d)
        if d.trains:
            defs.append(ev.stage_def(d.name))
    defs.append(report.STAGE)
    return {d.name: d for d in defs}


STAGES: dict[str, StageDef] = _build()
