"""Stage `eval-solve-sft`: the usual evaluation (`stages/evaluate.py`) of the solve-based arm's model, or, when
that arm was skipped (reference teacher), a manifest whose every set says why, which the report shows."""

from __future__ import annotations

import sys

from ..config import RunConfig
from . import evaluate as ev
from .common import StageDef
from .solve_sft import skipped


def run(cfg: RunConfig) -> dict:
    why = skipped(cfg)
    if not why:
        return ev.run(cfg, "solve-sft")
    st = ev.stage(cfg, "solve-sft").start()
    print(f"[eval-solve-sft] notice: skipped: {why}", file=sys.stderr, flush=True)
    summary = {s: {"skipped": f"no solve-based model: {why}"} for s in cfg.evaluate.sets}
    return st.finish({"sets": len(summary), "new_tokens": 0}, model="solve-sft", prompt=st.extra["prompt"],
                     summary=summary)  # fmt: skip


STAGE = StageDef(
    "eval-solve-sft", "evaluate the solve-sft model (skipped with the reference teacher)",
    lambda cfg: ev.stage(cfg, "solve-sft"), run,
)  # fmt: skip
