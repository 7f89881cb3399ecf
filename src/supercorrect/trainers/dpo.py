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
the prompt is left-truncated so the step is kept whole) and `CrossDPOTrainer` overrides `_prepare_dataset` to take
those `prompt_ids` / `chosen_ids` / `rejected_ids` columns as they are. Everything after that (collator, reference
model, PEFT, loss, metrics, distributed training, checkpoints) is TRL's and transformers' own.

Run it alone or under `accelerate launch` (see accelerate/*.yaml):
    python -m supercorrect.trainers.dpo --pairs pairs.jsonl --model hsft_dir --out dpo_dir
    accelerate launch --config_file accelerate/cpu_2proc.yaml -m supercorrect.trainers.dpo --pairs ... --batch-size 2
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from ..errors import UserError
from ..io import read_jsonl, write_json
from ..tracking import attach, resolve_report_to, save_history
from .sft import last_checkpoint

logger = logging.getLogger(__name__)

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
METRICS_FILE = "cross_dpo_metrics.json"
DATASET_DIR = "cross_dpo_dataset"  # the tokenised pairs, as trained


@dataclass
class LoraSettings:
    """LoRA adapter shape (peft). The reference model is the base with the adapter disabled.

    TRL disables every dropout module for DPO (policy and reference must be deterministic), so `dropout` is
    recorded in the adapter config but is 0 during training.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"

    def to_peft(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )


@dataclass
class CrossDPOConfig:
    """Our Cross-DPO knobs; `to_trl` maps them onto `trl.DPOConfig`.

    `batch_size` is per process (TRL's `per_device_train_batch_size`): the global batch is
    `batch_size * grad_accum * num_processes` (the paper: 128). The model is loaded in fp32; `bf16=True` means
    bf16 autocast over fp32 master weights (pure bf16 weights cannot take lr-1e-6 updates).
    """

    beta: float = 0.4
    learning_rate: float = 1e-6
    epochs: float = 8
    batch_size: int = 4
    grad_accum: int = 1
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    max_length: int = 1024
    seed: int = 0
    lora: LoraSettings | None = None
    logging_steps: int = 1
    save_steps: int | None = None  # checkpoint every N steps (for resume); None: no checkpoints
    save_total_limit: int | None = 2
    loss_type: str = "sigmoid"
    precompute_ref_log_probs: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    max_steps: int = -1  # > 0 overrides epochs (smoke runs)
    # One [prompt | chosen | rejected] sequence per pair (trainers/shared_prefix.py); False: TRL's two sequences.
    shared_prefix: bool = True
    pack_length: int = 0  # shared_prefix: 0 = one pair per row, N = pack pairs into rows of at most N tokens
    ref_cache_dir: str | None = None  # precomputed reference log-probs cache; None: <output_dir>/ref_logps
    # Trainer integrations, comma-separated: "auto" (TensorBoard when installed), "none", "tensorboard,wandb", ...
    report_to: str = "auto"
    # Where log_history.json and tensorboard/ go (the stage folder); None: output_dir
    tracking_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_length < 2:
            raise UserError(f"max_length must be >= 2, got {self.max_length}")
        if self.pack_length < 0:
            raise UserError(f"pack_length must be >= 0, got {self.pack_length}")

    def to_trl(self, output_dir: str) -> DPOConfig:
        return DPOConfig(
            output_dir=output_dir,
            beta=self.beta,
            loss_type=[self.loss_type],
            learning_rate=self.learning_rate,
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
            # Sequences already fit (tokenize_pair); TRL's keep_start truncation is then a no-op.
            max_length=self.max_length,
            seed=self.seed,
            logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or 500,
            save_total_limit=self.save_total_limit,
            precompute_ref_log_probs=self.precompute_ref_log_probs,
            bf16=self.bf16,
            activation_checkpointing=self.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
            report_to=resolve_report_to(self.report_to),
            ddp_find_unused_parameters=False,  # every trainable parameter gets a gradient (full or LoRA)
            # On a machine without GPU, say so: transformers then sets up gloo multi-CPU training when launched
            # with several processes (accelerate launch --multi_gpu / torchrun), instead of N unsynced runs.
            use_cpu=not torch.accelerator.is_available(),
        )


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, chosen: str, rejected: str, max_length: int
) -> dict[str, Any]:
    """Token ids of one pair: prompt, chosen and rejected tokenised separately, no special tokens, no EOS.

    The prompt ids are exactly `tokenizer(prompt)`, so they are a prefix of what the model sees at inference
    (the prompt is tokenised alone, then generation continues). Over `max_length`, the prompt loses tokens from
    its START (the student's last steps stay next to the step being corrected); only if a completion alone does not
    fit, both completions are cut at the end. `prompt_truncated` / `completion_truncated` count the tokens dropped.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    prompt_ids, chosen_ids, rejected_ids = ids(prompt), ids(chosen), ids(rejected)
    if not prompt_ids:
        raise ValueError("empty prompt: the first completion token would have no context")

    completion_truncated = 0
    keep = max_length - 1  # at least one prompt token must precede the completion
    if max(len(chosen_ids), len(rejected_ids)) > keep:
        completion_truncated = max(0, len(chosen_ids) - keep) + max(0, len(rejected_ids) - keep)
        chosen_ids, rejected_ids = chosen_ids[:keep], rejected_ids[:keep]

    budget = max_length - max(len(chosen_ids), len(rejected_ids))
    prompt_truncated = max(0, len(prompt_ids) - budget)
    if prompt_truncated:
        prompt_ids = prompt_ids[prompt_truncated:]

    return {
        "prompt_ids": prompt_ids,
        "chosen_ids": chosen_ids,
        "rejected_ids": rejected_ids,
        "prompt_truncated": prompt_truncated,
        "completion_truncated": completion_truncated,
    }


def build_dataset(
    tokenizer: PreTrainedTokenizerBase, pairs: list[dict], max_length: int
) -> tuple[Dataset, dict[str, int]]:
    """Tokenise pairs into a `prompt_ids`/`chosen_ids`/`rejected_ids` dataset; drop pairs with no signal."""
    stats = {"n_pairs": len(pairs), "n_dropped": 0, "n_prompt_truncated": 0, "n_completion_truncated": 0}
    rows = []
    for i, pair in enumerate(pairs):
        texts = [
            pair.get(key) if isinstance(pair, dict) else None for key in ("prompt", "chosen", "rejected")
        ]
        if not all(isinstance(text, str) for text in texts):
            raise UserError(f"preference pair {i}: needs string fields 'prompt', 'chosen' and 'rejected'")
        prompt, chosen, rejected = texts
        if not (prompt and chosen and rejected) or chosen == rejected:
            stats["n_dropped"] += 1  # empty or identical completions carry no preference
            continue
        row = tokenize_pair(tokenizer, prompt, chosen, rejected, max_length)
        stats["n_prompt_truncated"] += row["prompt_truncated"] > 0
        stats["n_completion_truncated"] += row["completion_truncated"] > 0
        rows.append(row)
    if not rows:
        raise UserError(f"no usable preference pairs among {len(pairs)}")
    return Dataset.from_list(rows), stats


class CrossDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer fed with our own token ids (see the module docstring for why)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # Replaces TRL's text pipeline (extract prompt, add EOS, tokenise, filter): the ids are used as they are.
        missing = [column for column in TOKEN_COLUMNS if column not in dataset.column_names]
        if missing:
            raise ValueError(f"{dataset_name} dataset is not tokenised by build_dataset: missing {missing}")
        return dataset


def build_trainer(
    model_path: str,
    pairs: list[dict],
    output_dir: str,
    cfg: CrossDPOConfig,
    ref_model_path: str | None = None,
) -> tuple[CrossDPOTrainer, dict[str, int]]:
    """A ready CrossDPOTrainer and the dataset stats. Reference: `ref_model_path`, else the starting model."""
    # DPOConfig first: under DeepSpeed ZeRO-3 it must exist before from_pretrained so the weights load sharded.
    args = cfg.to_trl(output_dir)
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
        "peft_config": cfg.lora.to_peft() if cfg.lora else None,
    }
    if not cfg.shared_prefix:
        return CrossDPOTrainer(**kwargs), stats
    from .shared_prefix import SharedPrefixDPOTrainer

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
) -> dict:
    """Train Cross-DPO and save model + tokenizer to `output_dir`; returns the metrics.

    `pairs` rows are {"prompt", "chosen", "rejected"} strings. With `resume`, training continues from the last
    `checkpoint-N` in `output_dir` (written every `cfg.save_steps`). With LoRA, `output_dir` holds the merged full
    model and `output_dir/adapter` the adapter alone. Metrics (with the full log history) are also written to
    `output_dir/cross_dpo_metrics.json`.
    """
    trainer, stats = build_trainer(model_path, pairs, output_dir, cfg, ref_model_path)
    attach(trainer, cfg.tracking_dir or output_dir)
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
        "global_batch_size": cfg.batch_size * cfg.grad_accum * trainer.args.world_size,
        "resumed_from": checkpoint,
        **stats,
        **{key: last[key] for key in sorted(last) if key.startswith(("rewards/", "logps/"))},
        "first_loss": step_logs[0]["loss"] if step_logs else None,
        "last_loss": last.get("loss"),
        "config": dataclasses.asdict(cfg),
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
    parser.add_argument("--lora-r", type=int, default=LoraSettings.r)
    parser.add_argument("--lora-alpha", type=int, default=LoraSettings.alpha)
    # One flag per scalar CrossDPOConfig field: --beta, --learning-rate, --batch-size, --bf16/--no-bf16, ...
    for f in dataclasses.fields(CrossDPOConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif f.type in (int, float, str):
            parser.add_argument(flag, type=f.type, default=f.default)
        elif f.type == int | None:
            parser.add_argument(flag, type=int, default=f.default)
        elif f.type == str | None:
            parser.add_argument(flag, default=f.default)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    scalar = {f.name for f in dataclasses.fields(CrossDPOConfig) if f.name != "lora"}
    try:
        cfg = CrossDPOConfig(**{name: getattr(args, name) for name in scalar})
        if args.lora:
            cfg.lora = LoraSettings(r=args.lora_r, alpha=args.lora_alpha)
        pairs = read_jsonl(args.pairs)
        metrics = train_cross_dpo(args.model, pairs, args.out, cfg, args.ref_model, resume=not args.no_resume)
    except UserError as e:  # the project's convention: one line, exit status 2
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: v for k, v in metrics.items() if k not in ("log_history", "config")}
        print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
