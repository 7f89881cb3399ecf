"""Stage `lema`: SFT of the base student on LEMA's correction triplets mixed with solutions (`lema-data`).

`lema-corrected` and `lema-plain`, the ablation's other two arms, train the same way on their own sets (same base
rows, added rows at equal completion tokens); all three use the `hsft:` trainer settings, so the only difference
between them is the added data.
"""

from __future__ import annotations

from ..config import RunConfig
from ..errors import UserError
from ..io import read_jsonl
from ..trainers.sft import train_sft
from . import Stage
from .common import StageDef, model_path


def variant_stage(cfg: RunConfig, name: str) -> Stage:
    return Stage(cfg, name, sections=("student", "hsft"), inputs=("lema-data",))


def run_variant(cfg: RunConfig, name: str) -> dict:
    st = variant_stage(cfg, name)
    st.upstream("lema-data")
    rows = read_jsonl(cfg.run_dir / "lema-data" / f"train_{name}.jsonl")
    if not rows:
        raise UserError(f"{name}: no training rows in lema-data/train_{name}.jsonl")
    base = model_path(cfg, "base")
    st.start()
    metrics = train_sft(base, rows, st.dir, cfg.hsft, seed=cfg.seed, dtype=cfg.student.dtype)
    added = [r for r in rows if r.get("kind") == "added"]
    print(f"[{name}] {metrics['steps']} steps, loss {metrics['first_loss']} -> {metrics['last_loss']}", flush=True)
    return st.finish({"examples": len(rows), "added": len(added), "steps": metrics["steps"]}, metrics=metrics)


STAGE = StageDef(
    "lema", "LEMA: SFT on correction triplets mixed with solutions",
    lambda cfg: variant_stage(cfg, "lema"), lambda cfg: run_variant(cfg, "lema"), trains=True,
)  # fmt: skip
