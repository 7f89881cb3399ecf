"""CPU speed: bf16 where the hardware has it, and the student's generation engine, against today's fp32 paths.

Issue 11. On the embedded model (SmolLM2-135M-Instruct) in one run, each variant in its own process (so its
peak RSS is its own), alternating when --repeats > 1:

training   a full fine-tuning step (AdamW, batch 4 of the demo's HSFT rows: HT prompt + reference-teacher
           template, up to --train-length tokens): fp32, then bf16 autocast over fp32 weights (what `auto` picks
           where the CPU has native bf16). Tokens per second over --train-steps steps after one warm-up step.
generation greedy decoding of the HT prompt on --prompts synthetic problems, --max-new-tokens (the demo's 180),
           stop string `</Answer>`:
             fp32-generate   stock `model.generate`, fp32, fixed batches of 48 rows: the path before issue 11
                             (the baseline)
             bf16-generate   the same, bf16 weights
             fp32-decode     our loop (generation.decode_batch): finished sequences leave the batch, padding
                             columns no longer needed are cut, batches sized from memory, the prompts' shared
                             opening prefilled once, the KV cache grown in place; fp32
             bf16-decode     the same in bf16: the CPU default (`student.dtype: auto`, engine "decode")
             bf16-continuous transformers' continuous batching (`generate_batch`), bf16 (optional: --variants)
           tokens per second = tokens generated (to EOS or the stop string) / wall seconds of the generate call.

Every row gets peak RSS and its ratio to its baseline (training: fp32; generation: fp32-generate); the variants'
greedy outputs are compared with the baseline's (identical texts out of N). Last line:
`generation speed-up vs fp32 baseline: N.NNx` (the default engine against the baseline).

    python benchmarks/cpu_speed.py                     # ~10 min on 2 quiet cores
    python benchmarks/cpu_speed.py --repeats 2 --json /tmp/cpu_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TRAIN = ("fp32", "bf16")
GENERATE = ("fp32-generate", "bf16-decode", "bf16-generate", "fp32-decode")  # the two that matter first
OPTIONAL = ("bf16-continuous",)
BASELINE, DEFAULT = "fp32-generate", "bf16-decode"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ht_prompts(tokenizer, n: int) -> list[str]:
    from supercorrect import prompts
    from supercorrect.data import generate_synthetic
    from supercorrect.models import chat_prompt

    problems = generate_synthetic(n, seed=0, min_steps=2, max_steps=3, split="test")
    return [chat_prompt(tokenizer, prompts.render("ht", problem=p.question)) for p in problems]


def child_generate(variant: str, model: str, args) -> dict:
    import torch

    from supercorrect.generation import SamplingSettings, TransformersBackend

    dtype = "float32" if variant.startswith("fp32") else "bfloat16"
    engine = "generate" if variant.endswith("-generate") else "decode"
    backend = TransformersBackend(model, dtype=dtype, batch_size=args.batch_size, engine=engine)
    prompts = ht_prompts(backend.tokenizer, args.prompts)
    s = SamplingSettings(max_new_tokens=args.max_new_tokens, stop=("</Answer>",))
    t0, c0 = time.perf_counter(), time.process_time()
    if variant.endswith("-continuous"):
        texts, tokens = continuous(backend, prompts, s)
    else:
        out = backend.generate(prompts, s)
        texts = [o[0].text for o in out]
        tokens = sum(o[0].n_tokens for o in out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"kind": "generate", "variant": variant, "tokens": tokens, "seconds": wall, "cpu_seconds": cpu,
            "tokens_per_s": tokens / wall, "peak_rss_mib": peak_rss_mib(), "texts": texts,
            "threads": torch.get_num_threads()}  # fmt: skip


def continuous(backend, prompts: list[str], s) -> tuple[list[str], int]:
    """transformers' continuous batching (paged KV cache, requests join and leave the batch every step)."""
    from transformers import GenerationConfig

    from supercorrect.generation import _cut_at_stop

    tok, model = backend.tokenizer, backend.model
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    gc = GenerationConfig(max_new_tokens=s.max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)  # fmt: skip
    out = model.generate_batch(inputs=ids, generation_config=gc)
    texts, tokens = [], 0
    for i in range(len(ids)):
        r = out[f"req_{i}"] if isinstance(out, dict) else out[i]
        gen = [t for t in r.generated_tokens if t != tok.eos_token_id]
        text, _ = _cut_at_stop(tok.decode(gen, skip_special_tokens=True), s.stop)
        # No stop string support there: count only the tokens up to it, the rest is waste this variant pays.
        texts.append(text)
        tokens += len(tok(text, add_special_tokens=False)["input_ids"])
    return texts, tokens


def child_train(variant: str, model_path: str, args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from supercorrect import prompts
    from supercorrect.data import generate_synthetic
    from supercorrect.models import load_tokenizer
    from supercorrect.teachers.reference import ReferenceTeacher

    tok = load_tokenizer(model_path)
    problems = generate_synthetic(4 * (args.train_steps + 1), seed=0, min_steps=2, max_steps=4)
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": prompts.render("ht", problem=p.question)},
             {"role": "assistant", "content": o.text.strip()}], tokenize=False)  # fmt: skip
        for p, o in zip(problems, ReferenceTeacher().templates(problems), strict=True)
    ]
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)  # fp32 master weights
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    bf16 = variant == "bf16"
    times, tokens, losses = [], 0, []
    for step in range(args.train_steps + 1):
        batch = tok(texts[4 * step : 4 * step + 4], return_tensors="pt", padding=True, truncation=True,
                    max_length=args.train_length, add_special_tokens=False)  # fmt: skip
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:  # the first step warms up (allocations, oneDNN kernel selection)
            times.append(time.perf_counter() - t0)
            tokens += int(batch["attention_mask"].sum())
            losses.append(loss.item())
    return {"kind": "train", "variant": variant, "tokens": tokens, "seconds": sum(times),
            "tokens_per_s": tokens / sum(times), "peak_rss_mib": peak_rss_mib(), "losses": losses}  # fmt: skip


def run_child(kind: str, variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{kind}:{variant}", "--model", args.model,
           "--prompts", str(args.prompts), "--max-new-tokens", str(args.max_new_tokens),
           "--batch-size", str(args.batch_size), "--train-steps", str(args.train_steps),
           "--train-length", str(args.train_length), "--threads", str(args.threads)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        lines = [x for x in (p.stderr or p.stdout).strip().splitlines() if "it/s]" not in x][-3:]
        why = f"exit {p.returncode}" + (" (killed: out of memory?)" if p.returncode == -9 else "")
        print(f"  {kind}:{variant} FAILED, {why}: {' | '.join(lines)}", flush=True)
        return {"kind": kind, "variant": variant, "error": f"{why}: {' | '.join(lines)}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_description() -> str:
    from supercorrect.precision import cpu_flags, native_bf16

    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx") or f == "avx512f")
    ok, why = native_bf16("cpu")
    return f"CPU flags: {', '.join(flags) or 'none of avx512f/bf16/amx'}; auto -> {'bf16' if ok else 'fp32'} ({why})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=180)
    ap.add_argument("--batch-size", type=int, default=48, help="rows per batch (the stock path's fixed size; "
                    "the decode engine's upper bound, the memory budget may lower it)")  # fmt: skip
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--train-length", type=int, default=256)  # issue 11: batch 4 x 256 tokens
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variants", default=",".join(TRAIN + GENERATE),
                    help=f"comma list of {TRAIN + GENERATE + OPTIONAL}")  # fmt: skip
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        kind, variant = args.child.split(":")
        fn = child_train if kind == "train" else child_generate
        print(json.dumps(fn(variant, args.model, args)))
        return

    from supercorrect.models import resolve_model

    args.model = resolve_model(args.model)
    wanted = args.variants.split(",")
    jobs = [("train", v) for v in TRAIN if v in wanted] + [("generate", v) for v in GENERATE + OPTIONAL if v in wanted]
    print(cpu_description())
    print(f"load before: {os.getloadavg()}; threads {args.threads}; model {args.model}", flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeats):
        for kind, variant in jobs if r % 2 == 0 else jobs[::-1]:  # alternate the order between repeats
            res = run_child(kind, variant, args)
            results.setdefault((kind, variant), []).append(res)
            if "error" not in res:
                print(f"  {kind:8s} {variant:16s} {res['tokens_per_s']:8.1f} tokens/s  {res['seconds']:7.1f} s  "
                      f"peak RSS {res['peak_rss_mib']:7.0f} MiB  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print(f"load after: {os.getloadavg()}")

    def med(kind, variant, key):
        rows = [x for x in results.get((kind, variant), []) if "error" not in x]
        return statistics.median(x[key] for x in rows) if rows else None

    speedup = None
    for kind, base in (("train", "fp32"), ("generate", BASELINE)):
        b = med(kind, base, "tokens_per_s")
        print(f"\n{kind}: | variant | tokens/s | ratio | peak RSS MiB | same text as baseline |")
        print("|---|---|---|---|---|")
        base_texts = next((x.get("texts") for x in results.get((kind, base), []) if "error" not in x), None)
        for k, v in jobs:
            if k != kind:
                continue
            tps, rss = med(k, v, "tokens_per_s"), med(k, v, "peak_rss_mib")
            if tps is None:
                print(f"| {v} | failed | | | |")
                continue
            ratio = tps / b if b else float("nan")
            same = ""
            texts = next((x.get("texts") for x in results[(k, v)] if "error" not in x), None)
            if base_texts and texts:
                same = f"{sum(a == c for a, c in zip(base_texts, texts, strict=True))}/{len(texts)}"
            print(f"| {v} | {tps:.1f} | {ratio:.2f}x | {rss:.0f} | {same} |")
            if k == "generate" and v == DEFAULT:
                speedup = ratio
        if kind == "train":
            lf = [x["losses"] for v in TRAIN for x in results.get(("train", v), []) if "error" not in x][:2]
            if len(lf) == 2:
                rel = max(abs(a - c) / abs(a) for a, c in zip(lf[0], lf[1], strict=True))
                print(f"training loss, bf16 vs fp32: largest relative difference {rel:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{k}:{v}": r for (k, v), r in results.items()}, indent=1))
    if speedup is not None:
        print(f"generation speed-up vs fp32 baseline: {speedup:.2f}x")


if __name__ == "__main__":
    main()
