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
a killed study resumes by running the same command again. A stage that does not depend on the training seed
(its fingerprint leaves the seed out: the base model's greedy evaluation, the templates) is computed once: before
a seed's run starts, each such stage another seed's run has finished with the very same fingerprint is copied
into it (`share_finished`), the manifest's fingerprint being the proof that it is the same work. The training stages' fingerprints do not depend on the
evaluation sets, so the two phases share every trained model; only the `eval-*` stages are redone. The table is
written to `<run_root>/<name>-<phase>-compare/` (compare.md, compare.csv, compare.png).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import compare
from .config import RunConfig, load_config
from .errors import UserError
from .io import read_json, run_lock, write_json
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


def share_finished(cfg: RunConfig, others: list[RunConfig]) -> list[tuple[str, str]]:
    """Copy into `cfg`'s run every stage of its pipeline that it has not finished and that one of `others` (the
    other seeds' runs) has finished with the same fingerprint. Stages are taken in pipeline order, so a shared
    stage can make the next one's fingerprint computable and equal. Returns [(stage, run it came from)].

    Only a finished stage (a manifest) whose fingerprint equals the one this run computes is copied; a stage
    whose fingerprint differs (one that hashes the seed, or any config difference) never is. The copy's manifest
    names this run (`run`) and where it came from (`shared_from`); the `report` stage (always redone) is never
    shared."""
    from .pipeline import stages_of
    from .stages.registry import STAGES

    shared: list[tuple[str, str]] = []
    lock = run_lock(cfg.run_dir)
    try:
        for name in stages_of(cfg):
            d = STAGES[name]
            if d.always:
                continue
            try:
                st = d.make(cfg)
                fp = st.fingerprint  # needs the upstream manifests: not computable before they exist
            except (UserError, OSError, ValueError, KeyError):
                continue
            if st.is_done():
                continue
            for other in others:
                src = other.run_dir / name
                try:
                    man = read_json(src / "manifest.json")
                except (OSError, ValueError):
                    continue
                if man.get("fingerprint") != fp:
                    continue
                tmp = cfg.run_dir / f".{name}.sharing"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(src, tmp)
                man["shared_from"] = {"run": other.name, "seed": other.seed, "dir": str(src)}
                man["run"] = {"name": cfg.name, "variant": cfg.variant or cfg.name, "seed": cfg.seed}
                write_json(tmp / "manifest.json", man)
                shutil.rmtree(st.dir, ignore_errors=True)  # unfinished work of this run, if any
                tmp.rename(st.dir)
                shared.append((name, other.name))
                print(f"[study] {cfg.name}: stage {name} shared from run {other.name} (same fingerprint {fp}; "
                      "it does not depend on the seed), not recomputed", file=sys.stderr, flush=True)
                break
    finally:
        lock.release()
    return shared


def run_study(path: str | Path, phase: Phase = "dev", seeds: list[int] | None = None,
              overrides: dict[str, Any] | None = None) -> StudyResult:  # fmt: skip
    """Run (or resume) every seed's pipeline in turn, then write the compare table over the seed runs."""
    cfgs = seed_configs(path, phase, seeds, overrides)
    for i, cfg in enumerate(cfgs, 1):
        print(f"[study] {phase} phase, seed {cfg.seed} ({i}/{len(cfgs)}): run {cfg.name}", file=sys.stderr, flush=True)
        share_finished(cfg, [c for c in cfgs if c is not cfg])
        run_pipeline(cfg)
    out = compare_dir(path, phase, overrides)
    result = compare.compare_runs([c.run_dir for c in cfgs], compare.Settings.of(cfgs[0]))
    paths = compare.write(result, out)
    return StudyResult(cfgs, out, paths)
