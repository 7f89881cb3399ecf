"""Stage `solve-sft`: SFT of the base student on the teacher's own solutions (`solve-templates`), with the `hsft:`
settings, so that it differs from `hsft` (the grounded arm) only in where the templates came from.

With the reference teacher the solve-based arm does not exist (see `solve-templates`): the stage records that
it was skipped and trains nothing.
"""

from __future__ import annotations

import sys

from ..config import RunConfig
from ..errors import UserError
from ..io import read_json, read_jsonl
from ..trainers.sft import train_sft
from . import Stage
from .common import StageDef, model_path


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "solve-sft", sections=("student", "hsft"), inputs=("solve-templates",))


def skipped(cfg: RunConfig) -> str | None:
    """Why the solve-based arm was skipped, or None when it exists."""
    path = cfg.run_dir / "solve-templates" / "manifest.json"
    return read_json(path)["counts"].get("skipped") if path.exists() else None


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("solve-templates")
    why = skipped(cfg)
    if why:
        st.start()
        print(f"[solve-sft] notice: skipped: {why}", file=sys.stderr, flush=True)
        return st.finish({"skipped": why})
    rows = read_jsonl(cfg.run_dir / "solve-templates" / "solved.jsonl")
    if not rows:
        raise UserError("solve-sft: the solve-templates stage kept no templates; nothing to train on")
    base = model_path(cfg, "base")
    st.start()
    metrics = train_sft(base, rows, st.dir, cfg.hsft, seed=cfg.seed, dtype=cfg.student.dtype)
    print(f"[solve-sft] {metrics['steps']} steps, loss {metrics['first_loss']} -> {metrics['last_loss']}", flush=True)
    return st.finish({"examples": len(rows), "steps": metrics["steps"]}, metrics=metrics)


# trains=False: its evaluation is `eval-solve-sft` (its own module), which also handles the skipped arm.
STAGE = StageDef("solve-sft", "explain-based distillation: SFT on the teacher's own solutions", stage, run)
