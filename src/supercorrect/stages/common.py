"""What the stages share: the model a stage reads, the DPO training-stage wrapper, and `StageDef`, the entry
each stage module declares so the registry (`stages/registry.py`) and the CLI know it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import UserError
from ..io import atomic_write_text, launch_rank, read_json, read_jsonl
from ..models import resolve_model
from ..precision import training_precision
from . import Stage, knobs

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


def run_budget(cfg: RunConfig) -> dict[str, Any]:
    """What the run's models were trained from: the training problems and templates (from the `templates`
    manifest), the pairs built (the `pairs` manifest, once it exists) and the data-budget knobs as this run sets
    them (`stages.knobs`). For the model cards: every number of a model names its budget."""

    def counts(stage: str) -> dict:
        m = cfg.run_dir / stage / "manifest.json"
        return (read_json(m).get("counts") or {}) if m.exists() else {}

    spec = cfg.data.get(cfg.templates.data)
    out: dict[str, Any] = {
        "training problems": counts("templates").get("problems", spec.n if spec else None),
        "training set": cfg.templates.data,
        "templates kept": counts("templates").get("kept"),
    }
    if (pairs := counts("pairs")).get("pairs") is not None:
        out["pairs built"] = pairs["pairs"]
    return {**out, **knobs(cfg)}


def model_card(cfg: RunConfig, title: str, base: str, data_desc: str, trained_on: dict[str, Any], train_cfg: dict,
               metrics: dict) -> str:  # fmt: skip
    """The README.md of a trained model: which run, variant and training seed made it, what it was trained on
    (`trained_on`: this model's examples or pairs) within the run's data budget, the training config and figures."""
    shown = {k: v for k, v in metrics.items() if k != "loss_curve"}
    budget = {"trained on": ", ".join(f"{v} {k}" for k, v in trained_on.items()), **run_budget(cfg)}
    rows = "\n".join(f"| {k} | {'all' if v is None and k.endswith('max_pairs') else v} |" for k, v in budget.items())
    return (
        f"---\nlibrary_name: transformers\nbase_model: {base}\ntags: [supercorrect, math, trl]\n---\n\n"
        f"# {title}\n\nFine-tuned with supercorrect from `{base}`.\n\n"
        f"## Run\n- run: `{cfg.name}`\n- variant: `{cfg.variant or cfg.name}`\n- training seed: {cfg.seed}\n\n"
        f"## Data\n{data_desc}\n\n"
        f"## Data budget\n| what | value |\n|---|---|\n{rows}\n\n"
        f"## Training config\n```json\n{json.dumps(train_cfg, indent=2)}\n```\n\n"
        f"## Training figures\n```json\n{json.dumps(shown, indent=2)}\n```\n\n"
        "Evaluation scores are added by the `evaluate` stage in the run's report (`report/report.md`).\n"
    )


def write_model_card(st: Stage, card: str) -> None:
    if launch_rank() == 0:  # one writer under `accelerate launch`
        atomic_write_text(st.dir / "model" / "README.md", card)


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
    what = "Cross-DPO" if st.name == "cross-dpo" else st.name
    write_model_card(st, model_card(
        cfg, f"{cfg.name}: {what} student", start_model,
        f"DPO from `{start_model}` on the first {len(pairs)} of {available} preference pairs in `{pairs_file}`.",
        {"pairs": len(pairs), "pairs available": available},
        cfg.cross_dpo.model_dump(mode="json"), metrics,
    ))  # fmt: skip
    print(f"[{st.name}] {metrics['steps']} steps, loss {metrics['first_loss']} -> {metrics['last_loss']}")
    return st.finish({"pairs": len(pairs), "pairs_available": available, "steps": metrics["steps"]}, metrics=metrics,
                     precision=training_precision(settings.bf16).to_dict())  # fmt: skip
