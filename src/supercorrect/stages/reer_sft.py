"""Stages `reer-sft-draft`, `reer-sft-low`, `reer-sft-high`: SFT of the base student (with the `hsft:` settings) on
x -> z then y, with z the trajectory after 0 (the student's draft), `reer.low_steps` or `reer.high_steps` search
steps. Comparing them answers REER's second question: does a lower perplexity of y make better training data?
Trajectories flagged as leaky are dropped when `reer.reject_leaky` is set."""

from __future__ import annotations

from .. import prompts
from ..config import RunConfig
from ..data import load_problems
from ..errors import UserError
from ..io import read_jsonl, write_jsonl
from ..trainers.sft import train_sft
from . import Stage
from .common import StageDef, model_path
from .reer_search import BUDGETS


def stage(cfg: RunConfig, budget: str) -> Stage:
    return Stage(cfg, f"reer-sft-{budget}", sections=("student", "hsft", "reer"), inputs=("reer-search",),
                 extra={"budget": budget})  # fmt: skip


def completion(z: str, y: str) -> str:
    """The training target: the thinking, a blank line, the solution (the search scored y after the same)."""
    return f"{z}\n\n{y}" if z else y


def run(cfg: RunConfig, budget: str) -> dict:
    st = stage(cfg, budget)
    st.upstream("reer-search")
    traj = read_jsonl(cfg.run_dir / "reer-search" / "trajectories.jsonl")
    questions = {p.id: p.question for p in load_problems(cfg.data[cfg.reer.data], cfg.base_dir)}
    kept = [t for t in traj if not (cfg.reer.reject_leaky and t[budget]["flagged"])]
    if not kept:
        raise UserError(f"{st.name}: every trajectory was flagged as leaky and rejected; nothing to train on")
    base = model_path(cfg, "base")
    st.start()
    rows = [{"id": t["id"], "prompt": prompts.render("cot", problem=questions[t["id"]]),
             "completion": completion(t[budget]["z"], t["y"])} for t in kept]  # fmt: skip
    write_jsonl(st.dir / "sft.jsonl", rows)
    metrics = train_sft(base, rows, st.dir, cfg.hsft, seed=cfg.seed, dtype=cfg.student.dtype)
    return st.finish({"examples": len(rows), "rejected_leaky": len(traj) - len(kept), "steps": metrics["steps"]},
                     metrics=metrics, budget=budget)  # fmt: skip


def stage_def(budget: str) -> StageDef:
    return StageDef(
        f"reer-sft-{budget}", f"REER: SFT on x -> z then y, z after the {budget} search budget",
        lambda cfg: stage(cfg, budget), lambda cfg: run(cfg, budget), trains=True,
    )


STAGES = tuple(stage_def(b) for b in BUDGETS)
