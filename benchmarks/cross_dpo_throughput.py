"""Cross-DPO training throughput: TRL's DPOTrainer vs our two-sequence path vs the shared-prefix path.

Same model (the embedded SmolLM2-135M-Instruct unless --model), same synthetic pairs, same hyper-parameters, in
one run, over prefix:completion ratios 1, 2, 4, 8, 16 (completion = one step, --completion tokens, 48 by
default; prefix = ratio x completion tokens, built from the HT prompt + a synthetic problem + the student's
steps, cut to length). Methods:
  trl           stock trl.DPOTrainer on the text pairs (two sequences per pair; it appends EOS to each step)
  two-seq       our CrossDPOTrainer, shared_prefix=False (TRL's loss and loop on our token ids)
  shared        our SharedPrefixDPOTrainer (one [prefix | chosen | rejected] sequence per pair), the default
  shared-cached the same with precompute_ref_log_probs and the on-disk cache: no reference forward per step
                (the one-off scoring is excluded from the step times; it is reported separately)

Every (method, ratio) runs in a fresh process (so that its peak memory is its own): --steps optimizer steps of
--batch-size pairs, the first one excluded from the timing as warm-up. pairs/s = batch_size * timed steps / their
wall time. Peak memory: the process's peak RSS during training (Linux VmHWM, reset after the models are
loaded), or on GPU torch.cuda.max_memory_allocated. The last line printed is the headline:
    shared-prefix / TRL at ratio 8: 2.31x

    python benchmarks/cross_dpo_throughput.py                          # CPU, fp32, ~10 min on 2 cores
    python benchmarks/cross_dpo_throughput.py --device cuda --bf16 --batch-size 8 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("trl", "two-seq", "shared", "shared-cached")
DEFAULT_METHODS = ("trl", "two-seq", "shared")
RATIOS = (1, 2, 4, 8, 16)


# -------------------------------------------------------------------------------------------------- pairs


def make_pairs(tokenizer, n: int, prefix_tokens: int, completion_tokens: int, seed: int = 0) -> list[dict]:
    """n distinct Cross-DPO-shaped pairs: prefix of ~prefix_tokens, chosen and rejected of ~completion_tokens."""
    from supercorrect import prompts
    from supercorrect.data import generate_synthetic
    from supercorrect.models import chat_prompt
    from supercorrect.teachers.reference import key_for, step_text
    from supercorrect.xmlformat import render_step_correction

    def cut(text: str, length: int, keep_end: bool = False) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < length:
            raise ValueError(f"text of {len(ids)} tokens, {length} needed")
        return tokenizer.decode(ids[-length:] if keep_end else ids[:length])

    pairs = []
    for i, problem in enumerate(generate_synthetic(n, seed=seed, min_steps=3, max_steps=5)):
        header = chat_prompt(tokenizer, prompts.render("ht", problem=problem.question))
        # The student's steps, the solution restated as often as needed to reach the prefix length.
        steps, k = "", 0
        while len(tokenizer(header + steps, add_special_tokens=False)["input_ids"]) < prefix_tokens + 8:
            for step in problem.steps:
                k += 1
                key = key_for(step)
                steps += (
                    f"<Step{k}>\n{step_text(step)}\n"
                    + (f"<Key>{key}</Key>\n" if key else "")
                    + f"</Step{k}>\n"
                )
        # Keep the end, the unfinished turn that the completions continue (short ratios lose the header).
        prefix = cut(header + steps, prefix_tokens, keep_end=True)
        last = problem.steps[-1]
        detail = (
            f" Recompute it from the previous results: {step_text(last)}. Check the units and the operation. "
            * 4
        )
        chosen = render_step_correction(
            k + 1, f"The operation is wrong for pair {i}: the step must use the previous result.", detail
        )
        rejected = render_step_correction(
            k + 1, f"No error in pair {i}; the step is fine.", f"{last.text} The answer stays as it is. " * 6
        )
        pairs.append(
            {
                "prompt": prefix,
                "chosen": cut(chosen, completion_tokens),
                "rejected": cut(rejected, completion_tokens),
            }
        )
    return pairs


# ------------------------------------------------------------------------------------------------- worker


def _rss_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: "5" resets the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_worker(args: argparse.Namespace) -> dict:
    import resource

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOTrainer

    from supercorrect.trainers.dpo import CrossDPOConfig, build_trainer

    cuda = args.device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        """Wall time and process CPU time (all threads) of every optimizer step."""

        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def on_step_begin(self, *_, **__):
            sync()
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *_, **__):
            sync()
            self.wall.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prefix_tokens = args.ratio * args.completion
    pairs = make_pairs(tokenizer, args.batch_size * args.steps, prefix_tokens, args.completion)
    cfg = CrossDPOConfig(
        batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-6,
        warmup_ratio=0.0,
        max_length=prefix_tokens + 4 * args.completion,  # nothing is truncated
        bf16=args.bf16,
        shared_prefix=args.method.startswith("shared"),
        precompute_ref_log_probs=args.method == "shared-cached",
        ref_cache_dir=os.path.join(args.out, "ref_cache"),
    )
    built = time.perf_counter()
    if args.method == "trl":
        trl_args = cfg.to_trl(args.out)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        trainer = DPOTrainer(
            model=model, args=trl_args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer
        )
    else:
        trainer, _ = build_trainer(args.model, pairs, args.out, cfg)
    setup_s = time.perf_counter() - built
    if cuda:
        trainer.model.to("cuda")  # no-op when the Trainer placed it already
    timer = StepTimer()
    trainer.add_callback(timer)

    rss_before = _rss_mib("VmRSS")
    reset = _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = _rss_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timed = slice(1, None)  # the first step is warm-up
    lengths = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return {
        "method": args.method,
        "ratio": args.ratio,
        "prefix_tokens": sum(len(r["prompt_ids"]) for r in lengths) / len(lengths),
        "completion_tokens": sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in lengths)
        / (2 * len(lengths)),
        "step_seconds": timer.wall,
        "step_cpu_seconds": timer.cpu,
        "pairs_per_s": args.batch_size * len(timer.wall[timed]) / sum(timer.wall[timed]),
        "pairs_per_cpu_s": args.batch_size * len(timer.cpu[timed]) / sum(timer.cpu[timed]),
        "setup_s": setup_s,  # model loading, tokenisation (and for shared-cached the reference scoring)
        "rss_before_train_mib": rss_before,
        "peak_rss_train_mib": peak,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "device": args.device,
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------------------------- driver


def tables(results: list[dict], ratios: list[int], methods: list[str]) -> str:
    """Throughput (wall clock, and the CPU-time ratios that a busy machine disturbs less) and peak memory."""
    by = {(r["method"], r["ratio"]): r for r in results}
    pairs = [(a, b) for a in methods for b in ("trl", "two-seq") if a.startswith("shared") and b in methods]

    def speedup(ratio: int, a: str, b: str, key: str) -> str:
        x, y = by.get((a, ratio)), by.get((b, ratio))
        return f"{x[key] / y[key]:.2f}x" if x and y else "-"

    head = ["ratio", "prefix:step tokens"] + [f"{m} pairs/s" for m in methods]
    head += [f"{a} / {b}" for a, b in pairs] + [f"{a} / {b} (CPU time)" for a, b in pairs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ratio in ratios:
        rows = [by.get((m, ratio)) for m in methods]
        first = next(r for r in rows if r)
        cells = [str(ratio), f"{first['prefix_tokens']:.0f}:{first['completion_tokens']:.0f}"]
        cells += [f"{r['pairs_per_s']:.3f}" if r else "-" for r in rows]
        cells += [speedup(ratio, a, b, "pairs_per_s") for a, b in pairs]
        cells += [speedup(ratio, a, b, "pairs_per_cpu_s") for a, b in pairs]
        lines.append("| " + " | ".join(cells) + " |")

    gpu = any(r["peak_gpu_mib"] for r in results)
    what = "peak GPU memory allocated" if gpu else "peak RSS during training"
    lines += ["", f"{what}, MiB:", "", "| ratio | " + " | ".join(methods) + " |"]
    lines.append("|" + "---|" * (len(methods) + 1))
    for ratio in ratios:
        cells = [str(ratio)]
        for m in methods:
            r = by.get((m, ratio))
            cells.append(f"{(r['peak_gpu_mib'] if gpu else r['peak_rss_train_mib']):.0f}" if r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default=None, help="model dir (default: the embedded SmolLM2-135M-Instruct)"
    )
    parser.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"among {', '.join(METHODS)}")
    parser.add_argument("--completion", type=int, default=48, help="tokens per chosen / rejected step")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per optimizer step")
    parser.add_argument(
        "--steps", type=int, default=3, help="optimizer steps per run, the first one is warm-up"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: torch's)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="repeat the sweep; each config's fastest run counts"
    )
    parser.add_argument("--json", default=None, help="write all results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ratio", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is warm-up)")
    if args.model is None:
        from supercorrect.models import convert_embedded

        args.model = str(convert_embedded("smollm2-135m"))

    if args.worker:
        print("RESULT " + json.dumps(run_worker(args)), flush=True)
        return

    ratios = [int(x) for x in args.ratios.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}")
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    runs: list[dict] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cross_dpo_bench_") as tmp:
        for repeat in range(args.repeats):
            for ratio in ratios:  # methods interleaved: a change of load on the machine hits all of them alike
                for method in methods:
                    out = os.path.join(tmp, f"{method}-{ratio}-{repeat}")
                    cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--method", method]
                    cmd += ["--ratio", str(ratio), "--out", out, "--completion", str(args.completion)]
                    cmd += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
                    cmd += ["--device", args.device] + (["--bf16"] if args.bf16 else [])
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                    if done.returncode != 0 or not lines:
                        sys.exit(f"{method} at ratio {ratio} failed:\n{done.stderr[-3000:]}")
                    r = json.loads(lines[-1][len("RESULT ") :])
                    runs.append(r)
                    # CPU share: CPU time / wall time / threads, 1.0 when nothing else competed for the cores.
                    share = sum(r["step_cpu_seconds"]) / sum(r["step_seconds"]) / r["threads"]
                    print(
                        f"ratio {ratio:>2} {method:<13} {r['pairs_per_s']:.3f} pairs/s  steps "
                        + " ".join(f"{x:.2f}" for x in r["step_seconds"])
                        + " s wall, "
                        + " ".join(f"{x:.2f}" for x in r["step_cpu_seconds"])
                        + f" s CPU (share {share:.2f})  peak {r['peak_gpu_mib'] or r['peak_rss_train_mib']:.0f} MiB",
                        flush=True,
                    )
    # Of repeated runs, keep each configuration's fastest: the one the machine's other load disturbed least.
    best: dict[tuple[str, int], dict] = {}
    for r in runs:
        key = (r["method"], r["ratio"])
        if key not in best or r["pairs_per_s"] > best[key]["pairs_per_s"]:
            best[key] = r
    results = list(best.values())
    print(
        f"\n{args.device}, {'bf16 autocast' if args.bf16 else 'fp32'}, {results[0]['threads']} threads, batch "
        f"{args.batch_size} pairs, {args.steps - 1} timed steps after 1 warm-up, best of {args.repeats} run(s), "
        f"model {args.model}, "
        f"{time.perf_counter() - start:.0f} s in all\n"
    )
    print(tables(results, ratios, methods))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    by = {(r["method"], r["ratio"]): r for r in results}
    if ("shared", 8) in by and ("trl", 8) in by:
        cpu = by["shared", 8]["pairs_per_cpu_s"] / by["trl", 8]["pairs_per_cpu_s"]
        print(f"\n(CPU time: shared-prefix / TRL at ratio 8: {cpu:.2f}x)")
        print(
            f"shared-prefix / TRL at ratio 8: {by['shared', 8]['pairs_per_s'] / by['trl', 8]['pairs_per_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
