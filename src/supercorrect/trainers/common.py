"""What both trainers share: the LoRA block (and its PEFT mapping), finding the last complete checkpoint, and
saving a plain model folder.

One module that `sft.py`, `dpo.py` and the two trainer config classes import, so that imports run one way
(configs -> common, trainers -> common) and neither trainer imports the other.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

ReportTo = str | list[str]


def check_report_to(v: ReportTo) -> ReportTo:
    """`report_to` of both trainer configs: "auto", "none", or integrations by name; "auto" stands alone."""
    names = [n.strip() for n in (v.split(",") if isinstance(v, str) else v)]
    if "auto" in names and len(names) > 1:
        raise ValueError("'auto' cannot be combined with other integrations; name them instead")
    return v


class LoraConfig(BaseModel):
    """The `lora:` block of `hsft:` / `cross_dpo:`: a LoRA adapter instead of full fine-tuning (peft).

    For DPO the reference model is the base with the adapter disabled. TRL disables every dropout module for DPO
    (policy and reference must be deterministic), so there `dropout` is recorded in the adapter config but is 0
    during training. The finished model is always saved merged (a plain model folder).
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    r: int = Field(16, ge=1)
    """Adapter rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (`lora_alpha`); the update is scaled by alpha / r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the adapter's input (`lora_dropout`)."""
    target_modules: list[str] | str = "all-linear"
    """Modules that get an adapter: a list of module names, or peft's "all-linear"."""

    def to_peft(self):
        """This block as a `peft.LoraConfig` for a causal LM."""
        import peft  # heavy (torch); loaded only when a trainer is built

        return peft.LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )


def peft_config(lora: LoraConfig | None):
    """A `lora:` block (or None: full fine-tuning) as the `peft_config` argument of a TRL trainer."""
    return lora.to_peft() if lora is not None else None


def last_checkpoint(folder: str | Path) -> str | None:
    """The newest COMPLETE `checkpoint-N` in `folder`, or None.

    The Trainer writes a checkpoint in place, `trainer_state.json` last, so a run killed while saving leaves a
    newest folder without it (or with a torn one), and resuming from that folder fails. Such folders are skipped
    and removed (the resumed run saves that step again); the newest one with a readable state is returned.
    """
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
    """Save a plain model folder (LoRA adapters merged in memory) that every later stage loads like any
    checkpoint. The SFT trainer's final save; the DPO trainer merges from the saved adapter instead
    (`trainers.dpo`), which does not depend on how training was sharded."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    elif trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        # Sharded weights: every process takes part in gathering them (FULL_STATE_DICT / ZeRO-3 16-bit save) and
        # rank 0 writes one normal checkpoint. A rank-0-only save_pretrained of the FSDP2 model died with
        # "RuntimeError: Attempted to access the data pointer on an invalid python storage".
        trainer.save_model(str(out))
        if trainer.accelerator.is_main_process:
            tokenizer.save_pretrained(out)
        return
    if trainer.accelerator.is_main_process:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
