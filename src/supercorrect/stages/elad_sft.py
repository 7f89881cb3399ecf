"""Stages `elad-sft`, `elad-sft-entropy`, `elad-sft-random`: SFT of the base student (with the `hsft:` settings)
on the revised rationales of the problems one selection rule chose (EGSS, entropy-only, random at equal total
compute: see `elad_select`). Each writes `<stage>/model`, evaluated by its `eval-<stage>` stage."""

from __future__ import annotations

from ..config import RunConfig
from ..errors import UserError
from ..io import read_jsonl, write_jsonl
from ..trainers.sft import train_sft
from . import Stage
from .common import StageDef, model_path

ARM_STAGE = {"egss": "elad-sft", "entropy": "elad-sft-entropy", "random": "elad-sft-random"}


def stage(cfg: RunConfig, arm: str) -> Stage:
    return Stage(cfg, ARM_STAGE[arm], sections=("student", "hsft"), inputs=("elad-revise",), extra={"arm": arm})


def run(cfg: RunConfig, arm: str) -> dict:
    st = stage(cfg, arm)
    st.upstream("elad-revise")
    rows = [r for r in read_jsonl(cfg.run_dir / "elad-revise" / "revised.jsonl") if r["kept"] and arm in r["arms"]]
    if not rows:
        raise UserError(f"{st.name}: no revised rationale was kept for the {arm!r} selection; nothing to train on")
    base = model_path(cfg, "base")
    st.start()
    data = [{"prompt": r["prompt"], "completion": r["rationale"], "id": r["id"]} for r in rows]
    write_jsonl(st.dir / "sft.jsonl", data)
    metrics = train_sft(base, data, st.dir, cfg.hsft, seed=cfg.seed, dtype=cfg.student.dtype)
    print(f"[{st.name}] {len(data)} rationales, {metrics['steps']} steps", flush=True)
    return st.finish({"examples": len(data), "steps": metrics["steps"]}, metrics=metrics, arm=arm)


def stage_def(arm: str) -> StageDef:
    what = {"egss": "EGSS", "entropy": "entropy-only", "random": "random"}[arm]
    return StageDef(
        ARM_STAGE[arm], f"ELAD: SFT on the revised rationales of the {what} selection",
        lambda cfg: stage(cfg, arm), lambda cfg: run(cfg, arm), trains=True,
    )


STAGES = tuple(stage_def(a) for a in ARM_STAGE)
