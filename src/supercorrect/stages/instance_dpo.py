"""Stage `instance-dpo`, a baseline of the paper's ablation (Table 2): DPO from the HSFT student on whole
solutions from stage `sample`: chosen = a correct sample of the problem (else the teacher's template),
rejected = a wrong sample; full turns, so they end with EOS. Same trainer and `cross_dpo:` settings as Cross-DPO,
so the two differ only in what a pair is.
"""

from __future__ import annotations

from .. import prompts
from ..config import RunConfig
from ..data import load_problems
from ..io import read_jsonl, write_jsonl
from ..models import chat_prompt, load_tokenizer
from . import Stage
from .common import StageDef, model_path, train_dpo_stage


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "instance-dpo", sections=("cross_dpo",), inputs=("hsft", "sample", "templates"))


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
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
    return train_dpo_stage(cfg, st, st.dir / "pairs.jsonl", model_path(cfg, "hsft"))


STAGE = StageDef("instance-dpo", "baseline: DPO on whole correct vs wrong solutions", stage, run, trains=True)
