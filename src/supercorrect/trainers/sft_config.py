"""The SFT trainer's settings: the `hsft:` section of a run config (also used by the CoT SFT baseline).

One class, declared once: the run config uses it as is, so every field below is settable from YAML and from
`--set hsft.<field>=...`. Defaults are the paper's values where it gives one (SuperCorrect, arXiv 2410.09008,
HSFT on 7B: 4 epochs, lr 2e-5, cosine schedule, warmup 0.02).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .common import LoraConfig, ReportTo, check_report_to


class SFTConfig(BaseModel):
    """Supervised fine-tuning on (prompt, completion) pairs, loss on the completion only (`trainers.sft`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    epochs: float = Field(4.0, gt=0)
    """Passes over the training rows (paper: 4)."""
    learning_rate: float = Field(2e-5, gt=0)
    """Peak learning rate of AdamW (paper: 2e-5)."""
    lr_scheduler: str = "cosine"
    """transformers' `lr_scheduler_type` (paper: cosine)."""
    warmup_ratio: float = Field(0.02, ge=0, le=1)
    """Share of the total steps spent warming up linearly (paper: 0.02)."""
    batch_size: int = Field(8, ge=1)
    """Rows per device per step; the global batch is batch_size * grad_accum * processes."""
    grad_accum: int = Field(1, ge=1)
    """Gradient accumulation steps."""
    max_length: int = Field(1024, ge=16)
    """Longest prompt + completion in tokens; longer rows are truncated by TRL."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    lora: LoraConfig | None = None
    """A LoRA adapter instead of full fine-tuning (None: full fine-tuning)."""
    logging_steps: int = Field(5, ge=1)
    """Log the loss every N optimizer steps (the loss curve in the stage's metrics)."""
    save_steps: int | None = Field(None, ge=1)
    """Checkpoint every N steps, the point a killed run resumes from; None: save the final model only."""
    bf16: bool | Literal["auto"] = "auto"
    """bf16 autocast over fp32 master weights; "auto": where the hardware runs bf16 natively (precision.py: CPUs
    with avx512_bf16/AMX, GPUs with bf16), else fp32. The stage's manifest records what was used and why."""
    report_to: ReportTo = "auto"
    """Where the Trainer also sends its logs: "auto" = TensorBoard event files in <stage>/tensorboard when
    tensorboard is installed, else none; "none"; or integrations by name ("tensorboard", "wandb", ...); see
    tracking.py. Never redoes a finished stage."""

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"report_to"})  # never redoes a finished stage

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, v: ReportTo) -> ReportTo:
        return check_report_to(v)
