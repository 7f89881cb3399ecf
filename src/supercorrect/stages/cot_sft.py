"""Stage `cot-sft`, a baseline of the paper's ablation (Table 2): SFT of the base student on plain
chain-of-thought solutions (CoT prompt -> the reference solution ending in \\boxed{answer}), on the same problems
whose templates HSFT kept, with the `hsft:` settings. Evaluated with the CoT prompt.
"""

from __future__ import annotations

from .. import prompts
from ..config import RunConfig
from ..data import load_problems
from ..errors import UserError
from ..io import read_jsonl, write_jsonl
from ..schema import Problem
from ..trainers.sft import train_sft
from . import Stage
from .common import StageDef, model_card, model_path, write_model_card


def cot_solution(p: Problem) -> str:
    """The reference solution as plain text (calculator annotations and '####' line dropped), boxed answer."""
    body = "\n".join(s.text for s in p.steps) if p.steps else p.solution.strip()
    if "\\boxed" not in body:
        body += f"\nThe final answer is $\\boxed{{{p.answer}}}$."
    return body


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "cot-sft", sections=("student", "hsft", "templates"), inputs=("templates",))


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("templates")
    kept = {r["id"] for r in read_jsonl(cfg.run_dir / "templates" / "hsft.jsonl")}
    problems = [p for p in load_problems(cfg.data[cfg.templates.data], cfg.base_dir) if p.id in kept]
    if not problems:
        raise UserError("cot-sft: no problems (the templates stage kept none)")
    base = model_path(cfg, "base")
    st.start()
    rows = [{"prompt": prompts.render("cot", problem=p.question), "completion": cot_solution(p)} for p in problems]
    write_jsonl(st.dir / "cot_sft.jsonl", rows)
    metrics = train_sft(base, rows, st.dir, cfg.hsft, seed=cfg.seed, dtype=cfg.student.dtype)
    write_model_card(st, model_card(
        cfg, f"{cfg.name}: CoT SFT student (baseline)", cfg.student.model,
        f"{len(rows)} plain chain-of-thought reference solutions (`{st.dir / 'cot_sft.jsonl'}`), the problems whose "
        "templates HSFT kept.",
        {"examples": len(rows)}, cfg.hsft.model_dump(mode="json"), metrics,
    ))  # fmt: skip
    return st.finish({"examples": len(rows), "steps": metrics["steps"]}, metrics=metrics)


STAGE = StageDef("cot-sft", "baseline: SFT on plain CoT solutions", stage, run, trains=True)
