"""HSFT: our `trainers.sft.train_sft` against a plain TRL SFTTrainer on the same rows (our overhead).

Rows: --rows hierarchical thought templates, written by the rule-based reference teacher for seeded synthetic
problems (what the demo's `templates` stage produces), HT prompt -> template, loss on the completion only. Both
sides train the same model (the embedded SmolLM2-135M-Instruct unless --model) with the same hyper-parameters
(the demo's: 1 epoch, lr 2e-4, cosine, warmup 0.05, batch 4, max length 512). The plain side is the few lines a
TRL user would write (SFTConfig + SFTTrainer + train + save_model); ours is the call the `hsft` stage makes.

Each run is a fresh process; the two alternate, --repeats times, and the medians are compared:
  end to end     the whole call: model and tokenizer loading, dataset, training, saving
  training       trainer.train() alone (tokens per second)
and peak RSS. The last line is the overhead of ours over plain TRL, end to end.

    python benchmarks/hsft_throughput.py                  # CPU, ~5 min on 2 cores
    python benchmarks/hsft_throughput.py --threads 1      # on a busy machine: steadier
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDES = ("ours", "plain")


def make_rows(n: int) -> list[dict]:
    from supercorrect import prompts
    from supercorrect.data import generate_synthetic
    from supercorrect.teachers.reference import ReferenceTeacher

    problems = generate_synthetic(n, seed=0, min_steps=2, max_steps=4)
    outputs = ReferenceTeacher().templates(problems)
    return [
        {"prompt": prompts.render("ht", problem=p.question), "completion": out.text.strip()}
        for p, out in zip(problems, outputs, strict=True)
        if out.text
    ]


def train_config():
    from supercorrect.trainers.sft_config import SFTConfig

    return SFTConfig(
        epochs=1, learning_rate=2e-4, lr_scheduler="cosine", warmup_ratio=0.05, batch_size=4, max_length=512
    )


def plain_trl(model_path: str, rows: list[dict], out: str, seed: int = 0) -> tuple[float, int]:
    """What a TRL user writes for the same training; returns (trainer.train() seconds, training tokens)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    cfg = train_config()
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["completion"]}],
            }
            for r in rows
        ]
    )
    args = SFTConfig(
        output_dir=out,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        completion_only_loss=True,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=seed,
        model_init_kwargs={"dtype": torch.float32},
        bf16=False,  # TRL defaults to bf16, which a CPU refuses
        use_cpu=not torch.cuda.is_available(),
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trainer = SFTTrainer(model=model_path, args=args, train_dataset=data, processing_class=tokenizer)
    tokens = sum(len(x["input_ids"]) for x in trainer.train_dataset)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(out)
    return seconds, tokens


def run_worker(args: argparse.Namespace) -> dict:
    import resource

    import torch

    rows = make_rows(args.rows)
    start, cpu = time.perf_counter(), time.process_time()
    if args.side == "ours":
        from supercorrect.trainers.sft import train_sft

        metrics = train_sft(args.model, rows, args.out, train_config(), seed=0)
        train_s, tokens, loss = metrics["train_seconds"], metrics["tokens_per_epoch"], metrics["train_loss"]
    else:
        train_s, tokens = plain_trl(args.model, rows, args.out)
        loss = None
    return {
        "side": args.side,
        "rows": len(rows),
        "tokens": tokens,
        "end_to_end_s": time.perf_counter() - start,
        "end_to_end_cpu_s": time.process_time() - cpu,
        "train_s": train_s,
        "tokens_per_s": tokens / train_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_loss": loss,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default=None, help="model dir (default: the embedded SmolLM2-135M-Instruct)"
    )
    parser.add_argument("--rows", type=int, default=32, help="templates to train on")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per side (alternating); medians compared"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: torch's)")
    parser.add_argument("--json", default=None, help="write all results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model is None:
        from supercorrect.models import convert_embedded

        args.model = str(convert_embedded("smollm2-135m"))
    if args.worker:
        print("RESULT " + json.dumps(run_worker(args)), flush=True)
        return

    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="hsft_bench_") as tmp:
        for i in range(args.repeats):
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:  # alternate who goes first
                cmd = [sys.executable, __file__, "--worker", "--side", side, "--model", args.model]
                cmd += ["--rows", str(args.rows), "--out", os.path.join(tmp, f"{side}-{i}")]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode != 0 or not lines:
                    sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
                r = json.loads(lines[-1][len("RESULT ") :])
                results[side].append(r)
                print(
                    f"{side:<5} end to end {r['end_to_end_s']:.1f} s ({r['end_to_end_cpu_s']:.1f} s CPU), "
                    f"training {r['train_s']:.1f} s = {r['tokens_per_s']:.0f} tokens/s, "
                    f"peak RSS {r['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side])

    first = results["ours"][0]
    print(
        f"\n{first['rows']} templates, {first['tokens']} tokens, 1 epoch, batch 4, {first['threads']} threads, "
        f"medians of {args.repeats} alternating runs per side\n"
    )
    print("| | ours (train_sft) | plain TRL SFTTrainer | overhead |")
    print("|---|---|---|---|")
    for label, key, better in (
        ("end to end, s", "end_to_end_s", "lower"),
        ("end to end, CPU s", "end_to_end_cpu_s", "lower"),
        ("training, tokens/s", "tokens_per_s", "higher"),
        ("peak RSS, MiB", "peak_rss_mib", "lower"),
    ):
        a, b = median("ours", key), median("plain", key)
        overhead = (a / b - 1) if better == "lower" else (b / a - 1)
        print(f"| {label} | {a:.1f} | {b:.1f} | {overhead:+.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    overhead = median("ours", "end_to_end_s") / median("plain", "end_to_end_s") - 1
    print(f"\nHSFT overhead of ours over plain TRL SFTTrainer, end to end: {overhead:+.1%}")


if __name__ == "__main__":
    main()
