"""The pipeline: the stages in order, nothing more.

A finished stage (its manifest's fingerprint matches the config and its inputs) is skipped; a half-finished one
resumes from its partial work. The run folder is locked while a pipeline or a stage runs in it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import RunConfig
from .errors import UserError
from .io import read_json, run_lock
from .stages import Stage, baselines, correct, cross_dpo, hsft, pairs, sample, templates
from .stages import evaluate as ev


@dataclass(frozen=True)
class StageDef:
    help: str
    make: Callable[[RunConfig], Stage]  # the stage's folder and fingerprint, without running it
    run: Callable[[RunConfig], dict]
    always: bool = False  # cheap stages that read everything before them (the report) are always redone


def _eval(tag: str, prompt: str | None = None) -> StageDef:
    what = "the base student" if tag == "base" else f"the {tag} model"
    return StageDef(
        f"evaluate {what}" + (" with the plain CoT prompt" if prompt == "cot" else ""),
        lambda cfg: ev.stage(cfg, tag, prompt),
        lambda cfg: ev.run(cfg, tag, prompt),
    )


def _report() -> StageDef:
    from . import report

    return StageDef("write the report (Markdown tables, PNG plots)", report.stage, report.run, always=True)


STAGES: dict[str, StageDef] = {
    "eval-base": _eval("base"),
    "eval-base-cot": _eval("base", "cot"),
    "templates": StageDef("teacher turns reference solutions into hierarchical templates", templates.stage, templates.run),
    "hsft": StageDef("hierarchical thought-template SFT of the student", hsft.stage, hsft.run),
    "eval-hsft": _eval("hsft"),
    "sample": StageDef("the HSFT student samples k solutions per training problem; keep the wrong ones",
                       sample.stage, sample.run),
    "correct": StageDef("teacher locates and corrects the first wrong step; the student writes its own",
                        correct.stage, correct.run),
    "pairs": StageDef("build Cross-DPO preference pairs (prefix continued, one-step completions)",
                      pairs.stage, pairs.run),
    "cross-dpo": StageDef("Cross-DPO training from the HSFT student", cross_dpo.stage, cross_dpo.run),
    "eval-cross-dpo": _eval("cross-dpo"),
    "cot-sft": StageDef("baseline: SFT on plain CoT solutions", baselines.cot_sft_stage, baselines.run_cot_sft),
    "eval-cot-sft": _eval("cot-sft"),
    "instance-dpo": StageDef("baseline: DPO on whole correct vs wrong solutions",
                             baselines.instance_dpo_stage, baselines.run_instance_dpo),
    "eval-instance-dpo": _eval("instance-dpo"),
    "report": _report(),
}

STAGE1 = ["eval-base", "templates", "hsft", "eval-hsft"]
STAGE2 = ["sample", "correct", "pairs", "cross-dpo", "eval-cross-dpo"]
BASELINES = ["cot-sft", "eval-cot-sft", "instance-dpo", "eval-instance-dpo"]
DEFAULT_STAGES = [*STAGE1, *STAGE2, *BASELINES, "report"]


def stages_of(cfg: RunConfig) -> list[str]:
    names = cfg.stages or DEFAULT_STAGES
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise UserError(f"stages: unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})")
    return names


def run_stage(cfg: RunConfig, name: str, force: bool = False) -> dict:
    d = STAGES[name]
    st = d.make(cfg)
    if st.is_done() and not force and not d.always:
        print(f"[{name}] up to date, skipped ({st.manifest_path})", file=sys.stderr, flush=True)
        return read_json(st.manifest_path)
    return d.run(cfg)


def run_pipeline(cfg: RunConfig, only: list[str] | None = None, force: list[str] | None = None) -> dict[str, dict]:
    names = only or stages_of(cfg)
    t0 = time.time()
    lock = run_lock(cfg.run_dir)
    try:
        results = {}
        for name in names:
            results[name] = run_stage(cfg, name, force=name in (force or []))
        print(f"[run] {cfg.name}: {len(names)} stages in {time.time() - t0:.0f}s -> {cfg.run_dir}", file=sys.stderr)
        return results
    finally:
        lock.release()
