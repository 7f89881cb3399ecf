"""Supervised fine-tuning on (prompt, completion) pairs with TRL's SFTTrainer, loss on the completion only.

Used by stage `hsft` (HT prompt -> hierarchical solution) and by the CoT SFT baseline (CoT prompt -> plain
solution). Full fine-tuning or LoRA; runs unchanged under `accelerate launch` (DeepSpeed / FSDP configs in
`accelerate/`). Checkpoints go to `<output_dir>/checkpoints` and a killed run resumes from the last one.

Run it alone or under `accelerate launch` on a JSONL of {prompt, completion} rows (docs/distributed.md):
    python -m supercorrect.trainers.sft --data rows.jsonl --model base_dir --out hsft_dir
    accelerate launch --config_file accelerate/fsdp.yaml -m supercorrect.trainers.sft --data ... --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from .. import tracking
from ..errors import UserError
from ..io import read_jsonl, write_json
from ..models import load_tokenizer, torch_dtype
from ..precision import training_precision, training_weights_dtype
from .common import LoraConfig, last_checkpoint, peft_config, save_final
from .cpu_fsdp import enable_cpu_fsdp
from .sft_config import SFTConfig

METRICS_FILE = "hsft_metrics.json"


def train_sft(
    model_path: str, rows: list[dict], output_dir: str | Path, cfg: SFTConfig, seed: int = 0, dtype: str = "auto",
    max_steps: int | None = None,
) -> dict:
    """rows: {"prompt": user text, "completion": assistant text}. Returns training metrics; the model and
    tokenizer are saved to `<output_dir>/model`. `max_steps`: train exactly this many optimizer steps (cycling
    over the rows) instead of `cfg.epochs` passes (stage `hsft-more`, the equal-compute control)."""
    # torch, datasets and TRL load only when a stage trains, so the CLI and the configs import fast.
    import torch
    import trl
    from datasets import Dataset

    enable_cpu_fsdp()  # an FSDP launch on a CPU-only machine runs FSDP, not silently DDP (trainers/cpu_fsdp.py)
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
    args = trl.SFTConfig(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        max_steps=max_steps or -1,  # > 0 overrides num_train_epochs
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
        report_to=tracking.resolve_report_to(cfg.report_to),
        seed=seed,
        bf16=precision.bf16,
        disable_tqdm=False,
        model_init_kwargs={"dtype": torch_dtype(dtype)},
        dataloader_num_workers=0,
        # On a CPU-only machine under `accelerate launch` (accelerate/cpu_2proc.yaml) this makes the processes
        # join one gloo group instead of training unsynced copies (see that file).
        use_cpu=not torch.accelerator.is_available(),
    )
    trainer = trl.SFTTrainer(
        model=model_path,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora),
    )
    tracking.attach(trainer, out)  # TensorBoard event files (report_to) in <output_dir>/tensorboard
    tokens = sum(len(x["input_ids"]) for x in trainer.train_dataset)
    t0 = time.time()
    resumed_from = last_checkpoint(ckpt_dir)
    result = trainer.train(resume_from_checkpoint=resumed_from)
    seconds = time.time() - t0
    save_final(trainer, tokenizer, out / "model")
    tracking.save_history(trainer, out)  # per-step loss, lr, grad norm: the report's training curves
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
        "tokens_per_second": round(tokens * (trainer.state.epoch if max_steps else cfg.epochs) / max(seconds, 1e-9), 1),
        "loss_curve": [(h["step"], h["loss"]) for h in logs],
        "device": str(trainer.args.device),
        "world_size": trainer.args.world_size,
        "distributed_type": trainer.accelerator.distributed_type.value,  # NO, MULTI_CPU (DDP), FSDP, DEEPSPEED...
        "global_batch_size": cfg.batch_size * cfg.grad_accum * trainer.args.world_size,
        "dtype": str(getattr(torch, dtype)),
        "precision": precision.to_dict(),
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m supercorrect.trainers.sft", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="JSONL of {prompt, completion} (e.g. templates/hsft.jsonl)")
    parser.add_argument("--model", required=True, help="starting model dir")
    parser.add_argument("--out", required=True, help="output dir (model/, checkpoints/, hsft_metrics.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    # One flag per scalar SFTConfig field (--epochs, --learning-rate, --batch-size, --bf16/--no-bf16, ...);
    # defaults come from SFTConfig, so validation and defaults stay in one place.
    for name, field in SFTConfig.model_fields.items():
        if name == "lora":
            continue
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=int if field.annotation in (int, int | None) else type(field.default))
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (then merged)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    given = {k: getattr(args, k) for k in SFTConfig.model_fields if k != "lora" and getattr(args, k) is not None}
    try:
        cfg = SFTConfig(**given, lora=LoraConfig() if args.lora else None)
    except ValidationError as e:  # the project's convention: one line, exit status 2
        bad = e.errors()[0]
        print(f"error: --{str(bad['loc'][0]).replace('_', '-')}: {bad['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        metrics = train_sft(args.model, read_jsonl(args.data), args.out, cfg, seed=args.seed, dtype=args.dtype)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(Path(args.out) / METRICS_FILE, metrics)
        print(json.dumps({k: v for k, v in metrics.items() if k != "loss_curve"}, indent=2, default=str))


if __name__ == "__main__":
    main()
