"""Cross-DPO (SuperCorrect stage 2, steps 4-5): DPO on one-step corrections, with TRL's loss and training loop.

A pair is (prompt, chosen, rejected) text. The prompt is the chat-templated user turn, the assistant header and the
student's steps 1..k-1: an *unfinished* assistant turn. Chosen (the teacher's `<Cause>` + `<Correction>` of step k)
and rejected (the student's own) are ONE step that continues that turn.

TRL 1.16's `DPOTrainer._prepare_dataset` (trl/trainer/dpo_trainer.py) cannot express this:
- it appends `tokenizer.eos_token` to every string chosen/rejected ("Adding EOS", `add_eos`): for ChatML models
  that is `<|im_end|>`, which closes the assistant turn after the step and teaches the model to stop there;
- conversational rows go through `apply_chat_template`, which renders the prompt as a closed turn plus a new
  generation header, never as a continuation;
- it tokenises `prompt + completion` jointly with special tokens and cuts the prompt at the common prefix, so
  boundary merges silently drop the end of the prompt;
- its only truncation (`keep_start`, in `DataCollatorForPreference`) cuts the END of the sequence, i.e. the
  completion, and examples whose prompt fills `max_length` are dropped.

So we tokenise ourselves (`tokenize_pair`: prompt and completion separately, no special tokens, ids concatenated;
the prompt is left-truncated so the step is kept whole) and `CrossDPOTrainer` (`trainers.dpo_trainer`) overrides `_prepare_dataset` to take
those `prompt_ids` / `chosen_ids` / `rejected_ids` columns as they are. Everything after that (collator, reference
model, PEFT, loss, metrics, distributed training, checkpoints) is TRL's and transformers' own.

Run it alone or under `accelerate launch` (see accelerate/*.yaml):
    python -m supercorrect.trainers.dpo --pairs pairs.jsonl --model hsft_dir --out dpo_dir
    accelerate launch --config_file accelerate/cpu_2proc.yaml -m supercorrect.trainers.dpo --pairs ... --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Literal

import torch
from datasets import load_from_disk
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..errors import UserError
from ..io import read_jsonl, write_json
from ..tracking import attach, save_history
from .common import LoraConfig, last_checkpoint, peft_config
from .cpu_fsdp import enable_cpu_fsdp
from .dpo_config import CrossDPOConfig
from .dpo_trainer import CrossDPOTrainer, build_dataset
from .shared_prefix import SharedPrefixDPOTrainer

logger = logging.getLogger(__name__)

METRICS_FILE = "cross_dpo_metrics.json"
DATASET_DIR = "cross_dpo_dataset"  # the tokenised pairs, as trained


def build_trainer(
    model_path: str,
    pairs: list[dict],
    output_dir: str,
    cfg: CrossDPOConfig,
    ref_model_path: str | None = None,
    seed: int = 0,
) -> tuple[CrossDPOTrainer, dict[str, int]]:
    """A ready CrossDPOTrainer and the dataset stats. Reference: `ref_model_path`, else the starting model."""
    enable_cpu_fsdp()  # an FSDP launch on a CPU-only machine runs FSDP, not silently DDP (trainers/cpu_fsdp.py)
    # DPOConfig first: under DeepSpeed ZeRO-3 it must exist before from_pretrained so the weights load sharded.
    args = cfg.to_trl(output_dir, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset, stats = build_dataset(tokenizer, pairs, cfg.max_length)
    # Back the dataset by a file that every process shares: TRL caches precomputed reference log-probs next to
    # it, and an in-memory dataset would get a random per-process cache path. It also records what was trained.
    data_dir = os.path.join(output_dir, DATASET_DIR)
    with args.main_process_first(desc="Cross-DPO dataset"):
        if args.local_process_index == 0:
            dataset.save_to_disk(data_dir)
        dataset = load_from_disk(data_dir)

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    ref_model = None
    if ref_model_path is not None:
        ref_model = AutoModelForCausalLM.from_pretrained(ref_model_path, dtype=torch.float32)
    # ref_model=None: TRL reloads the starting model as the reference, or disables the LoRA adapter, or (with
    # precompute_ref_log_probs) scores the dataset with the starting model before the first step.
    kwargs: dict[str, Any] = {
        "model": model,
        "ref_model": ref_model,
        "args": args,
        "train_dataset": dataset,
        "processing_class": tokenizer,
        "peft_config": peft_config(cfg.lora),
    }
    if not cfg.shared_prefix:
        return CrossDPOTrainer(**kwargs), stats
    ref_cache_dir = cfg.ref_cache_dir or os.path.join(output_dir, "ref_logps")
    return SharedPrefixDPOTrainer(**kwargs, pack_length=cfg.pack_length, ref_cache_dir=ref_cache_dir), stats


def _save_final_model(
    trainer: CrossDPOTrainer, model_path: str, output_dir: str, cfg: CrossDPOConfig
) -> None:
    """Full fine-tuning: the model. LoRA: the adapter in output_dir/adapter and the merged full model."""
    if cfg.lora is None:
        trainer.save_model(output_dir)  # distributed-aware (ZeRO-3 / FSDP state-dict gathering)
    else:
        adapter_dir = os.path.join(output_dir, "adapter")
        trainer.save_model(adapter_dir)
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            # Merge on CPU from the saved adapter: independent of how training was sharded.
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
            merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
            merged.save_pretrained(output_dir)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(output_dir)
    trainer.accelerator.wait_for_everyone()


def train_cross_dpo(
    model_path: str,
    pairs: list[dict],
    output_dir: str,
    cfg: CrossDPOConfig,
    ref_model_path: str | None = None,
    resume: bool = True,
    seed: int = 0,
) -> dict:
    """Train Cross-DPO and save model + tokenizer to `output_dir`; returns the metrics.

    `pairs` rows are {"prompt", "chosen", "rejected"} strings. With `resume`, training continues from the last
    `checkpoint-N` in `output_dir` (written every `cfg.save_steps`). With LoRA, `output_dir` holds the merged full
    model and `output_dir/adapter` the adapter alone. Metrics (with the full log history) are also written to
    `output_dir/cross_dpo_metrics.json`.
    """
    trainer, stats = build_trainer(model_path, pairs, output_dir, cfg, ref_model_path, seed=seed)
    attach(trainer, cfg.tracking_dir or output_dir)  # TensorBoard event files (report_to) beside the model
    checkpoint = last_checkpoint(output_dir) if resume else None
    if checkpoint:
        logger.info("resuming Cross-DPO from %s", checkpoint)

    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    runtime = time.perf_counter() - start
    _save_final_model(trainer, model_path, output_dir, cfg)

    history = trainer.state.log_history
    save_history(trainer, cfg.tracking_dir or output_dir)  # the report's training curves
    step_logs = [entry for entry in history if "loss" in entry]
    last = step_logs[-1] if step_logs else {}
    metrics: dict[str, Any] = {
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "runtime_s": runtime,
        "world_size": trainer.args.world_size,
        "distributed_type": trainer.accelerator.distributed_type.value,  # NO, MULTI_CPU (DDP), FSDP, DEEPSPEED...
        "global_batch_size": cfg.batch_size * cfg.grad_accum * trainer.args.world_size,
        "resumed_from": checkpoint,
        **stats,
        **{key: last[key] for key in sorted(last) if key.startswith(("rewards/", "logps/"))},
        "first_loss": step_logs[0]["loss"] if step_logs else None,
        "last_loss": last.get("loss"),
        "config": {**cfg.model_dump(mode="json"), "seed": seed},
        "log_history": history,
    }
    if trainer.is_world_process_zero():
        write_json(os.path.join(output_dir, METRICS_FILE), metrics)
    return metrics


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m supercorrect.trainers.dpo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pairs", required=True, help="JSONL of {prompt, chosen, rejected}")
    parser.add_argument("--model", required=True, help="starting model dir (the HSFT student)")
    parser.add_argument("--out", required=True, help="output dir (model, tokenizer, checkpoints, metrics)")
    parser.add_argument("--ref-model", default=None, help="reference model dir (default: the starting model)")
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --out")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (then merged)")
    parser.add_argument("--lora-r", type=int, default=LoraConfig.model_fields["r"].default)
    parser.add_argument("--lora-alpha", type=int, default=LoraConfig.model_fields["alpha"].default)
    parser.add_argument("--seed", type=int, default=0)
    # One flag per scalar CrossDPOConfig field: --beta, --learning-rate, --batch-size, --bf16/--no-bf16, ...
    for name, f in CrossDPOConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        doc = (f.description or "").replace("%", "%%")  # the field's docstring in dpo_config.py
        if f.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=doc)
        elif f.annotation in (int, float, str):
            parser.add_argument(flag, type=f.annotation, default=f.default, help=doc)
        elif f.annotation == int | None:
            parser.add_argument(flag, type=int, default=f.default, help=doc)
        elif f.annotation in (str | None, str | list[str], bool | Literal["auto"]):  # report_to: comma-separated
            parser.add_argument(flag, default=f.default, help=doc)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    scalar = [name for name in CrossDPOConfig.model_fields if name != "lora"]
    try:
        try:
            cfg = CrossDPOConfig(**{name: getattr(args, name) for name in scalar})
            if args.lora:
                cfg.lora = LoraConfig(r=args.lora_r, alpha=args.lora_alpha)
        except ValidationError as e:
            first = e.errors()[0]
            raise UserError(f"--{'-'.join(str(p) for p in first['loc']).replace('_', '-')}: {first['msg']}") from None
        pairs = read_jsonl(args.pairs)[: cfg.max_pairs]
        metrics = train_cross_dpo(
            args.model, pairs, args.out, cfg, args.ref_model, resume=not args.no_resume, seed=args.seed
        )
    except UserError as e:  # the project's convention: one line, exit status 2
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: v for k, v in metrics.items() if k not in ("log_history", "config")}
        print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
