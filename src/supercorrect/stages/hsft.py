"""Stage `hsft`: supervised fine-tuning of the student on (HT prompt + problem) -> hierarchical solution.

Reads `templates/hsft.jsonl`, trains with TRL's SFTTrainer (loss on the completion only; full or LoRA), and
writes `hsft/model/` with a model card stating the data, the config and the training figures.
"""

from __future__ import annotations

from ..config import RunConfig
from ..errors import UserError
from ..io import read_jsonl
from ..trainers.sft import train_sft
from . import Stage
from .common import StageDef, model_card, model_path, write_model_card


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "hsft", sections=("student", "hsft"), inputs=("templates",))


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("templates")
    rows = read_jsonl(cfg.run_dir / "templates" / "hsft.jsonl")
    if not rows:
        raise UserError(f"{cfg.run_dir / 'templates' / 'hsft.jsonl'}: no templates were kept; nothing to train on")
    base = model_path(cfg, "base")  # a missing student model is reported before the stage folder is touched
    st.start()
    metrics = train_sft(base, rows, st.dir, cfg.hsft, seed=cfg.seed, dtype=cfg.student.dtype)
    card = model_card(
        cfg,
        f"{cfg.name}: HSFT student",
        cfg.student.model,
        f"{len(rows)} hierarchical thought templates from `{cfg.run_dir / 'templates' / 'hsft.jsonl'}` "
        f"(teacher: {cfg.teacher.kind}{' ' + cfg.teacher.model if cfg.teacher.model else ''}).",
        {"examples": len(rows)},
        cfg.hsft.model_dump(mode="json"),
        metrics,
    )
    write_model_card(st, card)
    print(
        f"[hsft] {metrics['steps']} steps, loss {metrics['first_loss']} -> {metrics['last_loss']}, "
        f"{metrics['tokens_per_second']} tokens/s",
        flush=True,
    )
    return st.finish({"examples": len(rows), "steps": metrics["steps"]}, metrics=metrics)


STAGE = StageDef("hsft", "hierarchical thought-template SFT of the student", stage, run, trains=True)
