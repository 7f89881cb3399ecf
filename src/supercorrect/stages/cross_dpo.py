"""Stage `cross-dpo`: DPO on the Cross-DPO pairs, reference model = the HSFT student.

The pairs continue an unfinished assistant turn and end after one step, so they are tokenised by
`trainers.dpo_trainer.tokenize_pair` (prompt continued, no EOS) and not by TRL's chat-template handling.
"""

from __future__ import annotations

from ..config import RunConfig
from . import Stage
from .common import StageDef, model_path, train_dpo_stage


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "cross-dpo", sections=("cross_dpo",), inputs=("hsft", "pairs"))


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("pairs")
    return train_dpo_stage(cfg, st, cfg.run_dir / "pairs" / "pairs.jsonl", model_path(cfg, "hsft"))


STAGE = StageDef("cross-dpo", "Cross-DPO training from the HSFT student", stage, run, trains=True)
