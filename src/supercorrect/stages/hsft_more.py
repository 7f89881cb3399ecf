"""Stage `hsft-more`, the equal-compute control: the HSFT student trained further on HSFT's own data for exactly
as many optimizer steps as the `cross-dpo` stage took.

Why: Cross-DPO starts from the HSFT student and trains it for some more steps. A gain of Cross-DPO over HSFT could
come from those steps rather than from what the pairs teach; this model gets the same number of steps of plain
HSFT (same rows and formatting as stage `hsft`, the `hsft:` learning rate, schedule and batch settings, cycling
over the rows as often as the step count needs), so `compare` can test Cross-DPO against it on the same problems.
`hsft_more.learning_rate` gives the control a rate of its own (a control that overfits at HSFT's rate is an easy
bar; a gentler one is a stricter test of what the pairs teach).

It reads the step count from `cross-dpo/manifest.json` (`counts.steps`, the trainer's optimizer steps), so it
is redone when either `hsft` or `cross-dpo` changes. Not in the `supercorrect` recipe's default stage list (it
costs a training run): a config turns it on by listing `hsft-more` and `eval-hsft-more` in `stages:`
(configs/study.yaml does).
"""

from __future__ import annotations

import sys

from ..config import HsftMoreConfig, RunConfig
from ..errors import UserError
from ..io import read_jsonl
from ..trainers.sft import train_sft
from ..trainers.sft_config import SFTConfig
from . import Stage
from .common import StageDef, model_card, model_path, write_model_card


def stage(cfg: RunConfig) -> Stage:
    # The section's defaults (hsft's settings) hash as before it existed: finished controls are not redone.
    own = ("hsft_more",) if cfg.hsft_more != HsftMoreConfig() else ()
    return Stage(cfg, "hsft-more", sections=("student", "hsft", *own), inputs=("hsft", "cross-dpo"))


def settings(cfg: RunConfig) -> SFTConfig:
    """The control's training settings: `hsft:`'s, with what `hsft_more:` sets replaced."""
    if cfg.hsft_more.learning_rate is None:
        return cfg.hsft
    return cfg.hsft.model_copy(update={"learning_rate": cfg.hsft_more.learning_rate})


def cross_dpo_steps(st: Stage) -> int:
    """The optimizer steps the `cross-dpo` stage took, from its manifest."""
    man = st.upstream("cross-dpo")
    steps = (man.get("counts") or {}).get("steps", (man.get("metrics") or {}).get("steps"))
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"{st.cfg.run_dir / 'cross-dpo' / 'manifest.json'}: no optimizer step count recorded "
                        f"(got {steps!r}); redo the stage: supercorrect cross-dpo CONFIG --force")  # fmt: skip
    return steps


def run(cfg: RunConfig) -> dict:
    st = stage(cfg)
    st.upstream("hsft")
    steps = cross_dpo_steps(st)
    data = cfg.run_dir / "templates" / "hsft.jsonl"
    rows = read_jsonl(data)
    if not rows:
        raise UserError(f"{data}: no templates were kept; nothing to train on")
    start = model_path(cfg, "hsft")
    st.start()
    sft = settings(cfg)
    metrics = train_sft(start, rows, st.dir, sft, seed=cfg.seed, dtype=cfg.student.dtype, max_steps=steps)
    if metrics["steps"] != steps:  # the point of the stage: say so loudly if the trainer did not honour it
        print(f"[hsft-more] warning: trained {metrics['steps']} steps, cross-dpo took {steps}", file=sys.stderr)
    card = model_card(
        cfg,
        f"{cfg.name}: HSFT student trained further (equal-compute control)",
        cfg.student.model,
        f"The HSFT student (`{start}`) trained for {steps} more optimizer steps (as many as Cross-DPO took) on the same "
        f"{len(rows)} hierarchical thought templates (`{data}`).",
        {"examples": len(rows), "optimizer steps": steps},
        sft.model_dump(mode="json"),
        metrics,
    )
    write_model_card(st, card)
    print(f"[hsft-more] {metrics['steps']} steps (cross-dpo: {steps}), loss {metrics['first_loss']} -> "
          f"{metrics['last_loss']}", flush=True)  # fmt: skip
    return st.finish({"examples": len(rows), "steps": metrics["steps"], "cross_dpo_steps": steps},
                     metrics=metrics, start_model=start)  # fmt: skip


STAGE = StageDef("hsft-more", "equal-compute control: HSFT trained further for as many steps as Cross-DPO took",
                 stage, run, trains=True)  # fmt: skip
