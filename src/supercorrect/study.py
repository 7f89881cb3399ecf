"""`supercorrect study CONFIG`: one run config trained under several seeds, evaluated on the dev or the test split,
then one `compare` table over the seeds.

Why: a single run cannot say whether a difference between two models is the method or the luck of one training
seed, and a setting chosen by looking at the test split is not a result. A study is therefore the same run
config once per training seed (run `<name>-s<seed>`, `seed: <seed>`, all sharing one `variant` so that `compare`
pools them), evaluated in one of two phases:

- `--phase dev` (the default): evaluation on the dev set only (`study.dev_set`, default `dev`: problems from the
  training distribution that no stage trains on, e.g. a synthetic set with `skip:` past the training problems).
  Settings are chosen here, as often as needed.
- `--phase test`: evaluation on the config's own `evaluate.sets`, run once at the end with the chosen settings.

Each seed is an ordinary run (pipeline.run_pipeline): finished stages are skipped and a killed stage resumes, so
a killed study resumes by running the same command again. The training stages' fingerprints do not depend on the
evaluation sets, so the two phases share every trained model; only the `eval-*` stages are redone. The table is
written to `<run_root>/<name>-<phase>-compare/` (compare.md, compare.csv, compare.png).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import compare
from .config import RunConfig, load_config
from .errors import UserError
from .pipeline import run_pipeline

Phase = Literal["dev", "test"]


@dataclass
class StudyResult:
    runs: list[RunConfig]  # one per seed, as run
    compare_dir: Path
    paths: dict[str, Path]  # compare's outputs: markdown, csv, png


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` as a list of distinct integers."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    return seeds


def check_dev_unseen(cfg: RunConfig, dev: str) -> None:
    """The dev set shares no question with the sets the run's stages train or sample on."""
    from .data import load_problems
    from .pipeline import stages_of

    stages = stages_of(cfg)
    trained = [cfg.templates.data, cfg.sample.data]
    trained += [cfg.elad.data] if any(s.startswith("elad") for s in stages) else []
    trained += [cfg.reer.data] if any(s.startswith("reer") for s in stages) else []
    questions = {p.question for p in load_problems(cfg.data[dev], cfg.base_dir)}
    for name in dict.fromkeys(trained):
        if name == dev:
            raise UserError(f"--phase dev: the dev set {dev!r} is also a training set")
        if name in cfg.data:
            shared = sum(1 for p in load_problems(cfg.data[name], cfg.base_dir) if p.question in questions)
            if shared:
                raise UserError(f"--phase dev: the dev set {dev!r} shares {shared} problems with {name!r}, which is "
                                "trained on (give the dev set `skip:` past the training problems)")


def seed_configs(path: str | Path, phase: Phase = "dev", seeds: list[int] | None = None,
                 overrides: dict[str, Any] | None = None) -> list[RunConfig]:  # fmt: skip
    """The run config of each seed: `<name>-s<seed>`, its seed, the study's variant, the phase's evaluation sets.
    `seeds`: default the config's `study.seeds`."""
    overrides = dict(overrides or {})
    base = load_config(path, overrides)
    seeds = list(seeds if seeds is not None else base.study.seeds)
    if len(set(seeds)) != len(seeds):
        raise UserError(f"study seeds {seeds}: each seed at most once")
    phase_overrides: dict[str, Any] = {}
    if phase == "dev":
        dev = base.study.dev_set
        if dev not in base.data:
            raise UserError(f"--phase dev: no data set named {dev!r} (study.dev_set; have: {', '.join(base.data)})")
        check_dev_unseen(base, dev)
        phase_overrides = {"evaluate.sets": [dev], "evaluate.self_correction_sets": [dev]}
    elif phase != "test":
        raise UserError(f"--phase {phase!r}: expected dev or test")
    variant = base.variant or base.name
    return [
        load_config(path, {**overrides, **phase_overrides, "name": f"{base.name}-s{seed}", "seed": seed,
                           "variant": variant})  # fmt: skip
        for seed in seeds
    ]


def compare_dir(path: str | Path, phase: Phase, overrides: dict[str, Any] | None = None) -> Path:
    """`<run_root>/<name>-<phase>-compare`, beside the seed runs."""
    base = load_config(path, overrides)
    return base.run_dir.parent / f"{base.name}-{phase}-compare"


def run_study(path: str | Path, phase: Phase = "dev", seeds: list[int] | None = None,
              overrides: dict[str, Any] | None = None) -> StudyResult:  # fmt: skip
    """Run (or resume) every seed's pipeline in turn, then write the compare table over the seed runs."""
    cfgs = seed_configs(path, phase, seeds, overrides)
    for i, cfg in enumerate(cfgs, 1):
        print(f"[study] {phase} phase, seed {cfg.seed} ({i}/{len(cfgs)}): run {cfg.name}", file=sys.stderr, flush=True)
        run_pipeline(cfg)
    out = compare_dir(path, phase, overrides)
    result = compare.compare_runs([c.run_dir for c in cfgs], compare.Settings.of(cfgs[0]))
    paths = compare.write(result, out)
    return StudyResult(cfgs, out, paths)
