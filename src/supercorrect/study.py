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

`--jobs N` (default 1: the seeds in turn, in this process) runs the seeds as N concurrent child processes, each
`supercorrect study CONFIG ... --only-seed S` (the same `seed_configs` code builds its config, so it is the very
run `--jobs 1` would do), each with `max(1, cores // N)` torch/OpenMP threads (`--threads` overrides), its output
in `<run_root>/<run name>.log`. Why: on a small CPU the 135M model's generation barely gains from a second
thread (~300 tokens/s on 1, ~330 on 2 cores), so two seeds side by side on one thread each nearly double the
study's throughput. Before the children start, the first seed computes the stages that do not depend on the
seed (their fingerprints, computable before anything else has run, are equal across the seeds: `eval-base`),
with all the threads, so every other seed shares them; sharing otherwise happens when a child starts, from the
runs finished by then (a stage another child is computing at that moment is not shared: it is computed twice).
A failed seed does not stop the others; the command then exits non-zero naming it (exit code, last lines of its
log) and writes no table. Each child is an ordinary resumable run in its own run folder, whose lock keeps a
second process out, so a killed study resumes by running the same command again. On a GPU use `--jobs 1`: the
children would share one device (one GPU per job is future work).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import deque
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
              overrides: dict[str, Any] | None = None, jobs: int = 1, threads: int | None = None) -> StudyResult:  # fmt: skip
    """Run (or resume) every seed's pipeline, in turn (`jobs` 1) or as `jobs` concurrent child processes of
    `threads` torch threads each (default max(1, cores // jobs)), then write the compare table over the seed runs.
    A failed child raises UserError naming its seed once the other children are done."""
    if jobs < 1 or (threads is not None and threads < 1):
        raise UserError("--jobs and --threads must be at least 1")
    cfgs = seed_configs(path, phase, seeds, overrides)
    jobs = min(jobs, len(cfgs))
    if jobs == 1:
        _use_threads(threads)
        for i, cfg in enumerate(cfgs, 1):
            print(f"[study] {phase} phase, seed {cfg.seed} ({i}/{len(cfgs)}): run {cfg.name}", file=sys.stderr,
                  flush=True)  # fmt: skip
            _run_seed(cfg, cfgs)
    else:
        _run_children(path, phase, cfgs, overrides or {}, jobs, threads or max(1, (os.cpu_count() or 1) // jobs))
    out = compare_dir(path, phase, overrides)
    result = compare.compare_runs([c.run_dir for c in cfgs], compare.Settings.of(cfgs[0]))
    paths = compare.write(result, out)
    return StudyResult(cfgs, out, paths)


def run_one_seed(path: str | Path, phase: Phase, seeds: list[int] | None, overrides: dict[str, Any] | None,
                 seed: int, only: list[str] | None = None, threads: int | None = None) -> None:  # fmt: skip
    """One child of `--jobs N`: the seed's run exactly as `run_study` builds it (shared stages copied in first),
    optionally only the stages `only`, with `threads` torch threads."""
    _use_threads(threads)
    cfgs = seed_configs(path, phase, seeds, overrides)
    mine = [c for c in cfgs if c.seed == seed]
    if not mine:
        raise UserError(f"--only-seed {seed}: not one of the study's seeds {[c.seed for c in cfgs]}")
    _run_seed(mine[0], cfgs, only)


def _use_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _run_seed(cfg: RunConfig, cfgs: list[RunConfig], only: list[str] | None = None) -> None:
    """One seed's run, in this process: first the stages another seed's run has finished with the same
    fingerprint are copied in (`share_finished`), then the pipeline (only the stages `only`, when given)."""
    share_finished(cfg, [c for c in cfgs if c is not cfg])
    run_pipeline(cfg, only=only)


def seed_independent_stages(cfgs: list[RunConfig]) -> list[str]:
    """The stages whose fingerprints are computable now and equal for every seed (greedy `eval-base`): what the
    first seed computes before the parallel children start, so that the others share it."""
    from .pipeline import stages_of
    from .stages.registry import STAGES

    out = []
    for name in stages_of(cfgs[0]):
        d = STAGES[name]
        if d.always:
            continue
        try:
            fps = {d.make(c).fingerprint for c in cfgs}
        except (UserError, OSError, ValueError, KeyError):
            continue
        if len(fps) == 1:
            out.append(name)
    return out


def _child_command(path: str | Path, phase: Phase, cfgs: list[RunConfig], overrides: dict[str, Any], seed: int,
                   threads: int, only: list[str] | None = None) -> list[str]:  # fmt: skip
    """`supercorrect study ... --only-seed S`: the overrides as `--set KEY=VALUE`, each value dumped as YAML,
    which the CLI reads back with yaml.safe_load to the very same value."""
    import yaml

    cmd = [sys.executable, "-m", "supercorrect.cli", "study", str(path), "--phase", phase,
           "--seeds", ",".join(str(c.seed) for c in cfgs), "--only-seed", str(seed), "--threads", str(threads)]  # fmt: skip
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"]
    if only:
        cmd += ["--only-stages", ",".join(only)]
    return cmd


def _log_tail(log: Path, n: int = 15) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:])


def _run_children(path: str | Path, phase: Phase, cfgs: list[RunConfig], overrides: dict[str, Any], jobs: int,
                  threads: int) -> None:  # fmt: skip
    from .stages.registry import STAGES

    logs = {c.seed: c.run_dir.parent / f"{c.name}.log" for c in cfgs}
    failures: list[str] = []

    def start(cfg: RunConfig, only: list[str] | None, n_threads: int) -> tuple[subprocess.Popen, float]:
        log = logs[cfg.seed]
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = _child_command(path, phase, cfgs, overrides, cfg.seed, n_threads, only)
        with log.open("a", encoding="utf-8") as f:
            f.write(f"\n[study] {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "OMP_NUM_THREADS": str(n_threads),
                                         "MKL_NUM_THREADS": str(n_threads)})  # fmt: skip
        return proc, time.time()

    def finished(cfg: RunConfig, proc: subprocess.Popen, t0: float, what: str) -> bool:
        if proc.returncode == 0:
            print(f"[study] seed {cfg.seed}: {what} finished in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
            return True
        msg = f"seed {cfg.seed} (run {cfg.name}) failed with exit code {proc.returncode}; log {logs[cfg.seed]}"
        print(f"[study] {msg}, last lines:\n{_log_tail(logs[cfg.seed])}", file=sys.stderr, flush=True)
        failures.append(msg)
        return False

    first = [n for n in seed_independent_stages(cfgs) if not STAGES[n].make(cfgs[0]).is_done()]
    if first:
        print(f"[study] seed {cfgs[0].seed}: seed-independent stages {', '.join(first)} first, {threads * jobs} "
              f"threads, so the other seeds share them (log {logs[cfgs[0].seed]})", file=sys.stderr, flush=True)  # fmt: skip
        proc, t0 = start(cfgs[0], first, threads * jobs)
        proc.wait()
        if not finished(cfgs[0], proc, t0, "seed-independent stages"):
            raise UserError(f"study: {failures[0]}")
    queue = deque(cfgs)
    running: list[tuple[RunConfig, subprocess.Popen, float]] = []
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cfg = queue.popleft()
                proc, t0 = start(cfg, None, threads)
                running.append((cfg, proc, t0))
                print(f"[study] {phase} phase, seed {cfg.seed} ({len(cfgs) - len(queue)}/{len(cfgs)}): run {cfg.name} "
                      f"started ({threads} threads, pid {proc.pid}, log {logs[cfg.seed]})", file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(0.5)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                finished(item[0], item[1], item[2], f"run {item[0].name}")
    finally:
        for _cfg, proc, _t0 in running:  # interrupted: stop the children (each resumes with the same command)
            proc.terminate()
        for _cfg, proc, _t0 in running:
            proc.wait()
    if failures:
        raise UserError(f"study: {len(failures)} of {len(cfgs)} seeds failed: " + "; ".join(failures))
