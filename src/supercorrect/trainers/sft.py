"""Supervised fine-tuning on (prompt, completion) pairs with TRL's SFTTrainer, loss on the completion only.

Used by stage `hsft` (HT prompt -> hierarchical solution) and by the CoT SFT baseline (CoT prompt -> plain
solution). Full fine-tuning or LoRA; runs unchanged under `accelerate launch` (DeepSpeed / FSDP configs in
`accelerate/`). Checkpoints go to `<output_dir>/checkpoints` and a killed run resumes from the last one.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import LoraConfig, TrainConfig


def peft_config(lora: LoraConfig | None):
    """The run config's `lora:` block as a peft config (one mapping, shared with the DPO trainer)."""
    if lora is None:
        return None
    from .dpo import LoraSettings

    return LoraSettings(**lora.model_dump()).to_peft()


def last_checkpoint(folder: str | Path) -> str | None:
    """The newest COMPLETE `checkpoint-N` in `folder`, or None.

    The Trainer writes a checkpoint in place, `trainer_state.json` last, so a run killed while saving leaves a
    newest folder without it (or with a torn one), and resuming from that folder fails. Such folders are skipped
    and removed (the resumed run saves that step again); the newest one with a readable state is returned.
    """
    import json
    import re
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = {}
    for p in folder.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            steps[int(m.group(1))] = p
    for step in sorted(steps, reverse=True):
        path = steps[step]
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)  # half-written by a killed run
            continue
        return str(path)
    return None


def save_final(trainer, tokenizer, out: Path) -> None:
    """Save a plain model folder (LoRA adapters merged) that every later stage loads like any checkpoint."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if trainer.accelerator.is_main_process:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def train_sft(
    model_path: str, rows: list[dict], output_dir: str | Path, cfg: TrainConfig, seed: int = 0, dtype: str = "auto"
) -> dict:
    """rows: {"prompt": user text, "completion": assistant text}. Returns training metrics; the model and
    tokenizer are saved to `<output_dir>/model`."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ..models import load_tokenizer, torch_dtype
    from ..precision import training_precision, training_weights_dtype

    precision = training_precision(cfg.bf16)  # autocast; the weights stay in `dtype` (fp32 under "auto")
    dtype = training_weights_dtype(dtype)
    out = Path(output_dir)
    ckpt_dir = out / "checkpoints"
    tokenizer = load_tokenizer(model_path)
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["completion"]}],
            }
            for r in rows
        ]
    )
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        completion_only_loss=True,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=1,
        report_to="none",
        seed=seed,
        bf16=precision.bf16,
        disable_tqdm=False,
        model_init_kwargs={"dtype": torch_dtype(dtype)},
        dataloader_num_workers=0,
        # On a CPU-only machine under `accelerate launch` (accelerate/cpu_2proc.yaml) this makes the processes
        # join one gloo group instead of training unsynced copies (see that file).
        use_cpu=not torch.accelerator.is_available(),
    )
    trainer = SFTTrainer(
        model=model_path,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora),
    )
    tokens = sum(len(x["input_ids"]) for x in trainer.train_dataset)
    t0 = time.time()
    resumed_from = last_checkpoint(ckpt_dir)
    result = trainer.train(resume_from_checkpoint=resumed_from)
    seconds = time.time() - t0
    save_final(trainer, tokenizer, out / "model")
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "examples": len(rows),
        "tokens_per_epoch": tokens,
        "train_loss": result.training_loss,
        "first_loss": logs[0]["loss"] if logs else None,
        "last_loss": logs[-1]["loss"] if logs else None,
        "steps": trainer.state.global_step,
        "resumed_from": resumed_from,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens * cfg.epochs / max(seconds, 1e-9), 1),
        "loss_curve": [(h["step"], h["loss"]) for h in logs],
        "device": str(trainer.args.device),
        "world_size": trainer.args.world_size,
        "dtype": str(getattr(torch, dtype)),
        "precision": precision.to_dict(),
    }
