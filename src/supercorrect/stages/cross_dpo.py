"""Stage `cross-dpo`: DPO on the Cross-DPO pairs, reference model = the HSFT student.

The pairs continue an unfinished assistant turn and end after one step, so they are tokenised by
`trainers.dpo.tokenize_pair` (prompt continued, no EOS) and not by TRL's chat-template handling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import DPOConfig, RunConfig
from ..errors import UserError
from ..io import read_jsonl
from . import Stage
from .evaluate import model_path

if TYPE_CHECKING:  # the trainer imports torch, TRL and peft: loaded only when a stage trains
    from ..trainers.dpo import CrossDPOConfig


def dpo_settings(c: DPOConfig, seed: int) -> CrossDPOConfig:
    from ..precision import training_precision
    from ..trainers.dpo import CrossDPOConfig, LoraSettings

    fields = c.model_dump(exclude={"lora", "max_pairs"})  # max_pairs selects data; the stage applies it
    fields["bf16"] = training_precision(c.bf16).bf16  # "auto": bf16 autocast where the hardware has it
    lora = LoraSettings(**c.lora.model_dump()) if c.lora else None
    return CrossDPOConfig(**fields, lora=lora, seed=seed)


def train_stage(cfg: RunConfig, st: Stage, pairs_file, start_model: str) -> dict:
    pairs = read_jsonl(pairs_file)
    if not pairs:
        raise UserError(f"{pairs_file}: no preference pairs; nothing to train on")
    available = len(pairs)
    pairs = pairs[: cfg.cross_dpo.max_pairs]  # max_pairs None: all
    from ..trainers.dpo import train_cross_dpo

    st.start()
    settings = dpo_settings(cfg.cross_dpo, cfg.seed)
    # Outside the stage folder, which a config change clears: the cache is keyed by data and reference weights.
    settings.ref_cache_dir = str(cfg.run_dir / "cache" / "ref_logps")
    metrics = train_cross_dpo(start_model, pairs, str(st.dir / "model"), settings)
    metrics.pop("log_history", None)
    print(f"[{st.name}] {metrics['steps']} steps, loss {metrics['first_loss']} -> {metrics['last_loss']}")
    from ..precision import training_precision

    return st.finish({"pairs": len(pairs), "pairs_available": available, "steps": metrics["steps"]}, metrics=metrics,
                     precision=training_precision(cfg.cross_dpo.bf16).to_dict())  # fmt: skip


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "cross-dpo", sections=("cross_dpo",), inputs=("hsft", "pairs"))


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("pairs")
    return train_stage(cfg, st, cfg.run_dir / "pairs" / "pairs.jsonl", model_path(cfg, "hsft"))
