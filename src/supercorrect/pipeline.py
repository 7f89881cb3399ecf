"""The pipeline: a recipe's stages in order, nothing more.

Which stages run: the config's `stages:` when it lists some, else its recipe's (`recipes/`). A finished stage
(its manifest's fingerprint matches the config and its inputs) is skipped; a half-finished one resumes from its
partial work. The run folder is locked while a pipeline or a stage runs in it.
"""

from __future__ import annotations

import sys
import time

from .config import RunConfig
from .errors import UserError
from .io import read_json, run_lock
from .recipes.registry import RECIPES
from .stages.registry import STAGES


def stages_of(cfg: RunConfig) -> list[str]:
    names = cfg.stages or list(RECIPES[cfg.recipe].stages)
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
