"""Baselines for the paper's ablation (Table 2) in miniature.

`cot-sft`: SFT of the base student on plain chain-of-thought solutions (CoT prompt -> the reference solution
ending in \\boxed{answer}), on the same problems whose templates HSFT kept. Evaluated with the CoT prompt.
`instance-dpo`: DPO from the HSFT student on whole solutions from stage `sample`: chosen = a correct sample of
the problem (else the teacher's template), rejected = a wrong sample; full turns, so they end with EOS.
"""

from __future__ import annotations

from .. import prompts
from ..config import RunConfig
from ..errors import UserError
from ..io import read_jsonl, write_jsonl
from ..models import chat_prompt, load_tokenizer
from ..problems import load_problems
from ..schema import Problem
from ..trainers.sft import train_sft
from . import Stage
from .cross_dpo import train_stage
from .evaluate import model_path


def cot_solution(p: Problem) -> str:
    """The reference solution as plain text (calculator annotations and '####' line dropped), boxed answer."""
    body = "\n".join(s.text for s in p.steps) if p.steps else p.solution.strip()
    if "\\boxed" not in body:
        body += f"\nThe final answer is $\\boxed{{{p.answer}}}$."
    return body


def cot_sft_stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "cot-sft", sections=("student", "hsft", "templates"), inputs=("templates",))


def run_cot_sft(cfg: RunConfig) -> dict:
    st = cot_sft_stage(cfg)
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
    return st.finish({"examples": len(rows), "steps": metrics["steps"]}, metrics=metrics)


def instance_dpo_stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "instance-dpo", sections=("cross_dpo",), inputs=("hsft", "sample", "templates"))


def run_instance_dpo(cfg: RunConfig) -> dict:
    st = instance_dpo_stage(cfg)
    st.upstream("sample")
    samples = read_jsonl(cfg.run_dir / "sample" / "samples.jsonl")
    templates = {r["id"]: r["completion"] for r in read_jsonl(cfg.run_dir / "templates" / "hsft.jsonl")}
    problems = {p.id: p for p in load_problems(cfg.data[cfg.sample.data], cfg.base_dir)}
    tok = load_tokenizer(model_path(cfg, "hsft"))
    by_id: dict[str, list[dict]] = {}
    for s in samples:
        by_id.setdefault(s["id"], []).append(s)
    pairs = []
    for pid, group in by_id.items():
        wrong = next((s["text"] for s in group if not s["correct"] and s["text"].strip()), None)
        right = next((s["text"] for s in group if s["correct"]), templates.get(pid))
        if wrong is None or right is None:
            continue
        prompt = chat_prompt(tok, prompts.render("ht", problem=problems[pid].question))
        pairs.append({"id": pid, "prompt": prompt, "chosen": right + tok.eos_token, "rejected": wrong + tok.eos_token})
    st.start()
    write_jsonl(st.dir / "pairs.jsonl", pairs)
    return train_stage(cfg, st, st.dir / "pairs.jsonl", model_path(cfg, "hsft"))
