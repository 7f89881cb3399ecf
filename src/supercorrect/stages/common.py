"""What the stages share: the model a stage reads, the DPO training-stage wrapper, and `StageDef`, the entry
each stage module declares so the registry (`stages/registry.py`) and the CLI know it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..errors import UserError
from ..io import read_jsonl
from ..models import resolve_model
from ..precision import training_precision
from . import Stage

# Where generation stops, by prompt: an HT solution ends with its </Answer>; a CoT solution runs to EOS.
STOP = {"ht": ("</Answer>",), "cot": ()}


@dataclass(frozen=True)
class StageDef:
    """A stage as the pipeline and the CLI see it: its name, one line of help, and two functions."""

    name: str
    help: str
    make: Callable[[RunConfig], Stage]  # the stage's folder and fingerprint, without running it
    run: Callable[[RunConfig], dict]
    always: bool = False  # cheap stages that read everything before them (the report) are always redone
    trains: bool = False  # writes `<run>/<name>/model`: the registry adds an `eval-<name>` stage after it


def model_path(cfg: RunConfig, tag: str) -> str:
    """`base` is the configured student; any other tag is the model a training stage wrote."""
    if tag == "base":
        try:
            return resolve_model(cfg.student.model)
        except UserError as e:
            raise UserError(f"student.model: {e}") from None
    path = cfg.run_dir / tag / "model"
    if not (path / "config.json").exists():
        raise UserError(f"no model from stage {tag!r} at {path}: run `supercorrect {tag}` first")
    return str(path)


def train_dpo_stage(cfg: RunConfig, st: Stage, pairs_file: Path, start_model: str) -> dict:
    """The body of a DPO stage (Cross-DPO, instance DPO): the first `cross_dpo.max_pairs` pairs of
    `pairs_file`, trained from `start_model` with the `cross_dpo:` settings, model in `<stage>/model`."""
    pairs = read_jsonl(pairs_file)
    if not pairs:
        raise UserError(f"{pairs_file}: no preference pairs; nothing to train on")
    available = len(pairs)
    settings = cfg.cross_dpo
    pairs = pairs[: settings.max_pairs]  # max_pairs None: all
    # The trainer imports torch, TRL and peft: loaded only when a stage trains, so the CLI starts fast.
    from ..trainers.dpo import train_cross_dpo

    st.start()
    if settings.ref_cache_dir is None:
        # Outside the stage folder, which a config change clears: the cache is keyed by data and reference weights.
        settings = settings.model_copy(update={"ref_cache_dir": str(cfg.run_dir / "cache" / "ref_logps")})
    if settings.tracking_dir is None:  # log_history.json and tensorboard/ beside the model, not inside it
        settings = settings.model_copy(update={"tracking_dir": str(st.dir)})
    metrics = train_cross_dpo(start_model, pairs, str(st.dir / "model"), settings, seed=cfg.seed)
    metrics.pop("log_history", None)
    print(f"[{st.name}] {metrics['steps']} steps, loss {metrics['first_loss']} -> {metrics['last_loss']}")
    return st.finish({"pairs": len(pairs), "pairs_available": available, "steps": metrics["steps"]}, metrics=metrics,
                     precision=training_precision(settings.bf16).to_dict())  # fmt: skip
