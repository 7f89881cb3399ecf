"""The `supercorrect` command: `run` for a whole pipeline, one subcommand per stage, and a few tools.

Errors the user can fix (config, data, paths) print one line and exit with code 2; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from .errors import UserError

EPILOG = """examples:
  supercorrect run configs/demo.yaml                 # every stage of the config, skipping finished ones
  supercorrect templates configs/demo.yaml           # one stage alone (reads the previous stage's artifact)
  supercorrect evaluate configs/demo.yaml --model hsft
  supercorrect run configs/demo.yaml --set hsft.epochs=1 --set name=quick
  supercorrect run configs/stage1.yaml --set recipe=cot-sft   # another recipe on the same data (see `recipes`)
  supercorrect check-grader --data ../shared/data    # rule-based grader against real reference answers
  supercorrect compare runs/study-s0 runs/study-s1   # accuracy intervals and paired tests across runs and seeds
  supercorrect study configs/study.yaml --phase dev  # the config once per seed, then one compare table
  supercorrect export runs/demo exported/           # templates, corrections, pairs as HF datasets + cards
  supercorrect locate-bench dev.jsonl --reference ../shared/data/gsm8k/test.jsonl   # teacher's first-error F1

A run writes everything under runs/<name>/<stage>/ with a manifest.json per stage; see README.md."""


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise UserError(f"--set {p!r}: expected KEY=VALUE, e.g. --set hsft.epochs=2")
        k, v = p.split("=", 1)
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise UserError(f"--set {p!r}: the value is not valid YAML ({getattr(e, 'problem', None) or e})") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    from .stages.registry import STAGES

    parser = argparse.ArgumentParser(
        prog="supercorrect",
        description="SuperCorrect end to end: hierarchical thought-template SFT (stage 1) and cross-model "
        "collaborative DPO (stage 2) for small math LLMs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("config", help="run config (YAML), e.g. configs/demo.yaml")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
        p.add_argument("--force", action="store_true", help="redo the stage even if it is up to date")
        return p

    p = with_config(sub.add_parser("run", help="run the config's recipe (or its `stages:`) in order (resumes a killed run)"))
    p.add_argument("--stages", help="comma-separated subset of stages to run, in order")
    for name, d in STAGES.items():
        if name.startswith("eval-"):
            continue
        with_config(sub.add_parser(name, help=d.help))
    p = with_config(sub.add_parser("evaluate", help="evaluate a model of the run (base, hsft, ...)"))
    p.add_argument("--model", default="base", help="base | hsft | cross-dpo | cot-sft | instance-dpo")
    p.add_argument("--prompt", choices=["ht", "cot"], help="prompt (default: the config's evaluate.prompt)")
    p = sub.add_parser("check-grader", help="verify reference answers of GSM8K / MATH-500 with the grader")
    p.add_argument("--data", default="../shared/data", help="folder holding gsm8k/ and math500/")
    p = sub.add_parser("prepare-model", help="convert the embedded default model once and print its folder")
    p.add_argument("name", nargs="?", default="smollm2-135m")
    p = sub.add_parser("compare", help="one table (Markdown, CSV, PNG) across run folders and seeds, with "
                       "intervals and paired tests; reads the runs' artifacts only")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (runs/<name>)")
    p.add_argument("--out", help="output folder (default: compare/ beside the first run folder)")
    p.add_argument("--interval", choices=["wilson", "bootstrap"], default="wilson", help="accuracy interval")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--bootstrap-samples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="bootstrap random seed (default 0)")
    p.add_argument("--baseline", metavar="VARIANT", help="also test every model of the other variants against "
                   "the same model of this variant (same seeds, same problems)")
    p = sub.add_parser("study", help="the config once per training seed (runs <name>-s<seed>), evaluated on the "
                       "dev or the test split, then one compare table; re-run to resume (see study.py)")
    p.add_argument("config", help="run config (YAML), e.g. configs/study.yaml")
    p.add_argument("--seeds", help="comma-separated training seeds (default: the config's study.seeds, else 0,1,2)")
    p.add_argument("--phase", choices=["dev", "test"], default="dev",
                   help="dev: evaluate on the dev set only (choose settings here); test: the config's evaluate.sets, "
                   "once at the end (default dev)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--jobs", type=int, default=1, help="seeds run side by side as child processes, logs in "
                   "<run_root>/<run>.log (default 1: in turn; on a GPU keep 1)")
    p.add_argument("--threads", type=int, help="torch threads per job (default: cores // jobs, at least 1)")
    p.add_argument("--only-seed", type=int, help=argparse.SUPPRESS)  # one child of --jobs N
    p.add_argument("--only-stages", help=argparse.SUPPRESS)
    sub.add_parser("stages", help="list the stages")
    sub.add_parser("recipes", help="list the recipes (a run config picks one with `recipe:`)")
    p = sub.add_parser("export", help="write a run's templates, corrections and pairs as HF datasets with cards")
    p.add_argument("run_dir", help="the run folder, e.g. runs/demo")
    p.add_argument("out", help="output folder; one dataset per subfolder (load with datasets.load_dataset)")
    p.add_argument("--push-to-hub", metavar="REPO", help="also push to this hub dataset repo (needs network, HF_TOKEN)")
    p.add_argument("--public", action="store_true", help="with --push-to-hub: create a public repo (default private)")
    p = sub.add_parser("locate-bench", help="score a teacher or a critic model on first-error location (F1)")
    p.add_argument("data", help="labelled solutions: JSON array or JSONL (ProcessBench format) or corrections.jsonl")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--teacher", choices=["reference", "openai", "local"], default="reference")
    who.add_argument("--critic", metavar="MODEL", help="a model as critic (plain correction prompt), e.g. a run's hsft")
    p.add_argument("--model", help="teacher model (openai: API model name; local: id or path)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint")
    p.add_argument("--api-key-env", help="NAME of the environment variable holding the API key")
    p.add_argument("--max-tokens", type=int, help="completion limit per answer")
    p.add_argument("--cache-dir", help="teacher cache (default: OUT/teacher_cache)")
    p.add_argument("--price-in-per-1m", type=float, help="USD per million prompt tokens (for the cost)")
    p.add_argument("--price-out-per-1m", type=float, help="USD per million completion tokens")
    p.add_argument("--mode", choices=["single_pass", "stepwise"], default="single_pass")
    p.add_argument("--reference", action="append", metavar="GSM8K_JSONL",
                   help="GSM8K file(s) whose questions give the reference steps, or synthetic:SPLIT:N:SEED[:MIN:MAX] "
                   "(repeatable)")
    p.add_argument("--out", help="output folder (default: locate-bench/<data>-<teacher>)")
    p.add_argument("--limit", type=int, help="only the first N items")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from .config import load_config
    from .io import run_lock
    from .pipeline import run_pipeline, run_stage
    from .stages.registry import STAGES

    if args.command == "stages":
        for name, d in STAGES.items():
            print(f"{name:20s} {d.help}")
        return 0
    if args.command == "recipes":
        from .recipes.registry import RECIPES

        for name, r in RECIPES.items():
            print(f"{name:20s} {r.summary}")
        return 0
    if args.command == "prepare-model":
        from .models import resolve_model

        print(resolve_model(args.name))
        return 0
    if args.command == "export":
        from .export import export_run

        written = export_run(args.run_dir, args.out, push_to_hub=args.push_to_hub, private=not args.public)
        for name, n in written.items():
            print(f"{name}: {n} rows -> {args.out}/{name}")
        return 0
    if args.command == "locate-bench":
        from .locate_bench import main as locate_bench

        return locate_bench(args)
    if args.command == "check-grader":
        from pathlib import Path

        from .grading import check_reference_answers

        data = Path(args.data)
        for name, rel in (("gsm8k", "gsm8k/test.jsonl"), ("math500", "math500/test.jsonl")):
            if not (data / rel).exists():
                raise UserError(f"{data / rel}: file not found (pass --data DIR)")
            r = check_reference_answers(name, data / rel)
            print(f"{name}: {r['verified']}/{r['rows']} verified ({100 * r['rate']:.2f}%)")
            for f in r["failures"]:
                print(f"  failure: {f}")
        return 0

    if args.command == "compare":
        from pathlib import Path

        from . import compare

        if not 0 < args.level < 1 or args.bootstrap_samples < 100:
            raise UserError("compare: --level must be in (0, 1) and --bootstrap-samples at least 100")
        for d in args.run_dirs:
            if not Path(d).is_dir():
                raise UserError(f"{d}: run folder not found")
        settings = compare.Settings(args.interval, args.level, args.bootstrap_samples, args.bootstrap_seed)
        result = compare.compare_runs(args.run_dirs, settings, baseline=args.baseline)
        paths = compare.write(result, args.out or Path(args.run_dirs[0]).resolve().parent / "compare")
        print(paths["markdown"].read_text(encoding="utf-8"))
        for kind, path in paths.items():
            print(f"[compare] {kind}: {path}", file=sys.stderr)
        return 0

    if args.command == "study":
        from .study import parse_seeds, run_one_seed, run_study

        seeds = parse_seeds(args.seeds) if args.seeds else None
        if args.only_seed is not None:
            only = args.only_stages.split(",") if args.only_stages else None
            run_one_seed(args.config, args.phase, seeds, _overrides(args.set), args.only_seed, only, args.threads)
            return 0
        result = run_study(args.config, args.phase, seeds, _overrides(args.set), args.jobs, args.threads)
        print(result.paths["markdown"].read_text(encoding="utf-8"))
        for kind, path in result.paths.items():
            print(f"[study] {kind}: {path}", file=sys.stderr)
        return 0

    cfg = load_config(args.config, _overrides(args.set))
    if args.command == "run":
        only = [s.strip() for s in args.stages.split(",")] if args.stages else None
        if only:
            bad = [s for s in only if s not in STAGES]
            if bad:
                raise UserError(f"--stages: unknown stage {bad[0]!r} (known: {', '.join(STAGES)})")
        run_pipeline(cfg, only=only, force=only if args.force else None)
        return 0
    lock = run_lock(cfg.run_dir)
    try:
        if args.command == "evaluate":
            from .stages import evaluate

            evaluate.run(cfg, args.model, args.prompt)
        else:
            run_stage(cfg, args.command, force=args.force)
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
