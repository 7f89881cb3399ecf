"""The Cross-DPO trainer's settings: the `cross_dpo:` section of a run config (also used by the instance-DPO
baseline) and the flags of `python -m supercorrect.trainers.dpo`.

One class, declared once: the run config uses it as is, so every field below is settable from YAML and from
`--set cross_dpo.<field>=...`. Defaults are the paper's values where it gives one (SuperCorrect, arXiv
2410.09008, Cross-DPO on 7B: 8 epochs, global batch 128, lr 1e-6, cosine schedule, warmup 0.05; beta is not
stated, 0.4 is Step-DPO's, the closest released method). `to_trl` maps them onto `trl.DPOConfig`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..precision import training_precision
from ..tracking import resolve_report_to
from .common import LoraConfig, ReportTo, check_report_to


class CrossDPOConfig(BaseModel):
    """DPO on one-step corrections (`trainers.dpo`). The model is loaded in fp32; `bf16=True` means bf16 autocast
    over fp32 master weights (pure bf16 weights cannot take lr-1e-6 updates)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    beta: float = Field(0.4, gt=0)
    """DPO temperature: how far the policy may move from the reference (Step-DPO: 0.4)."""
    learning_rate: float = Field(1e-6, gt=0)
    """Peak learning rate of AdamW (paper: 1e-6)."""
    epochs: float = Field(8.0, gt=0)
    """Passes over the pairs (paper: 8); `max_steps` > 0 overrides it."""
    batch_size: int = Field(4, ge=1)
    """Pairs per process per step (TRL's per_device_train_batch_size); the global batch is
    batch_size * grad_accum * processes (paper: 128)."""
    grad_accum: int = Field(1, ge=1)
    """Gradient accumulation steps."""
    lr_scheduler: str = "cosine"
    """transformers' `lr_scheduler_type` (paper: cosine)."""
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    """Share of the total steps spent warming up linearly (paper: 0.05)."""
    max_length: int = Field(1024, ge=16)
    """Longest prompt + completion in tokens: the prompt loses tokens from its start, the step is kept whole."""
    lora: LoraConfig | None = None
    """A LoRA adapter instead of full fine-tuning; the reference is then the base with the adapter disabled."""
    logging_steps: int = Field(1, ge=1)
    """Log loss and rewards every N optimizer steps."""
    save_steps: int | None = Field(None, ge=1)
    """Checkpoint every N steps, the point a killed run resumes from; None: no checkpoints."""
    save_total_limit: int | None = Field(2, ge=1)
    """Checkpoints kept (older ones are deleted); None: all."""
    loss_type: str = "sigmoid"
    """TRL's DPO loss (`sigmoid` is the paper's); the shared-prefix path supports sigmoid, hinge, ipo."""
    rpo_alpha: float = Field(0.0, ge=0)
    """RPO (Pang et al. 2024, arXiv 2404.19733): add rpo_alpha * the NLL of the chosen step (TRL's "sft" loss, the
    mean over the batch's chosen tokens) to the DPO loss, as TRL's loss list [loss_type, "sft"] with weights
    [1, rpo_alpha]. 0: plain DPO (the paper's)."""
    precompute_ref_log_probs: bool = False
    """Score every pair with the reference model once before training (and cache it) instead of every step."""
    bf16: bool | Literal["auto"] = "auto"
    """bf16 autocast over fp32 master weights; "auto": where the hardware runs bf16 natively (precision.py), else
    fp32. The stage's manifest records what was used and why."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    max_steps: int = -1
    """> 0: train exactly this many optimizer steps, overriding `epochs` (smoke runs)."""
    shared_prefix: bool = True
    """One [prompt | chosen | rejected] sequence per pair (`trainers.shared_prefix`); false: TRL's two rows."""
    pack_length: int = Field(0, ge=0)
    """Shared prefix only: 0 = one pair per row; N = pack several pairs into rows of at most N tokens."""
    ref_cache_dir: str | None = None
    """Where precomputed reference log-probs are cached; None: the stage's run cache (`<run>/cache/ref_logps`),
    or `<output_dir>/ref_logps` when the trainer runs alone."""
    max_pairs: int | None = Field(None, ge=1)
    """Train on the first N pairs of the artifact (None: all). Selects data: the stage applies it."""
    report_to: ReportTo = "auto"
    """Where the Trainer also sends its logs: "auto" = TensorBoard event files in <stage>/tensorboard when
    tensorboard is installed, else none; "none"; or integrations by name ("tensorboard", "wandb", ...); see
    tracking.py. Never redoes a finished stage."""
    tracking_dir: str | None = None
    """Where log_history.json and tensorboard/ go; None: the stage folder (the trainer alone: its output_dir)."""

    # Keys added after run folders existed: at their default they leave the fingerprint as it was (finished
    # stages stay finished); set to anything else, they are part of it.
    HASHED_IF_SET: ClassVar[dict[str, Any]] = {"rpo_alpha": 0.0}
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"report_to", "tracking_dir"})  # never redo a finished stage

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, v: ReportTo) -> ReportTo:
        return check_report_to(v)

    @property
    def losses(self) -> tuple[list[str], list[float]]:
        """TRL's loss list and weights: the DPO loss, plus the chosen NLL weighted by rpo_alpha (RPO)."""
        if self.rpo_alpha > 0:
            return [self.loss_type, "sft"], [1.0, self.rpo_alpha]
        return [self.loss_type], [1.0]

    def to_trl(self, output_dir: str, seed: int = 0):
        """These settings as `trl.DPOConfig` (the training arguments TRL's DPOTrainer takes)."""
        import torch  # heavy: loaded only when a trainer is built
        from trl import DPOConfig

        return DPOConfig(
            output_dir=output_dir,
            beta=self.beta,
            loss_type=self.losses[0],
            loss_weights=self.losses[1],
            learning_rate=self.learning_rate,
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
            # Sequences already fit (tokenize_pair); TRL's keep_start truncation is then a no-op.
            max_length=self.max_length,
            seed=seed,
            logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or 500,
            save_total_limit=self.save_total_limit,
            precompute_ref_log_probs=self.precompute_ref_log_probs,
            bf16=training_precision(self.bf16).bf16,  # "auto" resolved for this machine
            activation_checkpointing=self.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
            report_to=resolve_report_to(self.report_to),
            ddp_find_unused_parameters=False,  # every trainable parameter gets a gradient (full or LoRA)
            # On a machine without GPU, say so: transformers then sets up gloo multi-CPU training when launched
            # with several processes (accelerate launch --multi_gpu / torchrun), instead of N unsynced runs.
            use_cpu=not torch.accelerator.is_available(),
        )
