"""Distributed parity: HSFT and Cross-DPO on 2 processes (DDP, FSDP2, DeepSpeed ZeRO-3) against 1 process.

Not a speed benchmark: it prints, for each trainer and engine, the loss of every step of a 1-process run with
the global batch (4) and of a 2-process run with half of it per process, their largest relative difference, and
the largest absolute difference of the saved weights (loaded with from_pretrained), so docs/distributed.md can
quote numbers anyone can reproduce. The tests (tests/test_*_distributed.py, tests/test_shared_prefix.py) assert
the same comparisons; this prints them.

Model: a tiny random Llama (SmolLM2's architecture, hidden 64, 2 layers) over SmolLM2's real tokenizer (the
embedded model must be installed); policy = reference + noise, so the DPO loss is not the trivial log 2. Two
optimizer steps at lr 1e-3, fp32, CPU, gloo, through the real entry points `python -m supercorrect.trainers.sft`
and `python -m supercorrect.trainers.dpo` under `accelerate launch --config_file accelerate/*_2proc.yaml`.

    python benchmarks/distributed_parity.py                     # ~5-10 min on 2 cores
    python benchmarks/distributed_parity.py --engines fsdp      # one engine
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "ddp": ROOT / "accelerate" / "cpu_2proc.yaml",
    "fsdp": ROOT / "accelerate" / "fsdp_cpu_2proc.yaml",
    "zero3": ROOT / "accelerate" / "deepspeed_zero3_cpu_2proc.yaml",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(tmp: Path) -> dict[str, list[str]]:
    """Tiny models and data; the CLI arguments (without batch size and --out) of each trainer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from supercorrect.models import convert_embedded

    tok = AutoTokenizer.from_pretrained(convert_embedded("smollm2-135m"))
    for name, noise in (("ref", 0.0), ("policy", 0.05)):
        torch.manual_seed(0)
        cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn_like(p))
        model.save_pretrained(tmp / name)
        tok.save_pretrained(tmp / name)
    sums = [(2, 3), (10, 7), (41, 1), (6, 6)]
    sft = [
        {"prompt": f"What is {a} + {b}?",
         "completion": f"<Step1>\nAdd {a} and {b}.\n</Step1>\n" + "<Step2>\nCarry the one.\n</Step2>\n" * (a % 3)
         + f"<Answer>{a + b}</Answer>"}
        for a, b in sums
    ]  # fmt: skip
    head = tok.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False, add_generation_prompt=True)
    pairs = [
        {"prompt": head.replace("Q", f"What is {a} + {b}?") + f"<Step1>\nAdd {a} and {b}.\n</Step1>\n",
         "chosen": f"<Step2>\n<Cause>Wrong sum.</Cause>\n<Correction>{a} + {b} = {a + b}</Correction>\n</Step2>",
         "rejected": f"<Step2>\n<Cause>None.</Cause>\n<Correction>{a} + {b} = {a + b + 1}</Correction>\n</Step2>"}
        for a, b in sums
    ]  # fmt: skip
    for name, rows in (("sft.jsonl", sft), ("pairs.jsonl", pairs)):
        (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--learning-rate", "1e-3", "--warmup-ratio", "0", "--bf16", "false"]  # parity in fp32
    dpo = ["-m", "supercorrect.trainers.dpo", "--pairs", str(tmp / "pairs.jsonl"), "--model", str(tmp / "policy"),
           "--ref-model", str(tmp / "ref"), "--max-steps", "2", "--no-resume", *common]  # fmt: skip
    return {
        "hsft": ["-m", "supercorrect.trainers.sft", "--data", str(tmp / "sft.jsonl"), "--model", str(tmp / "ref"),
                 "--epochs", "2", "--logging-steps", "1", *common],  # fmt: skip
        "dpo-shared-prefix": dpo,
        "dpo-two-sequence": [*dpo, "--no-shared-prefix"],
    }


def run(cmd: list[str], out: Path) -> tuple[float, dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    done = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    if (out / "hsft_metrics.json").exists():
        m = json.loads((out / "hsft_metrics.json").read_text())
        m["losses"], m["model_dir"] = [loss for _, loss in m["loss_curve"]], out / "model"
    else:
        m = json.loads((out / "cross_dpo_metrics.json").read_text())
        m["losses"], m["model_dir"] = [e["loss"] for e in m["log_history"] if "loss" in e], out
    return wall, m


def weight_diff(a: Path, b: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    sa, sb = (AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).state_dict() for d in (a, b))
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default="ddp,fsdp,zero3")
    ap.add_argument("--trainers", default="hsft,dpo-shared-prefix,dpo-two-sequence")
    args = ap.parse_args()
    engines = [e for e in args.engines.split(",") if e != "zero3" or importlib.util.find_spec("deepspeed")]
    if engines != args.engines.split(","):
        print("deepspeed is not installed: zero3 skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        commands = prepare(tmp)
        print("| trainer | engine | distributed_type | losses, 1 process | losses, 2 processes | max rel. diff "
              "| max weight diff | wall s (1 / 2 proc) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for trainer in args.trainers.split(","):
            cli = commands[trainer]
            wall_one, one = run([sys.executable, *cli, "--batch-size", "4"], tmp / f"{trainer}-one")
            for engine in engines:
                launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS[engine]),
                          "--main_process_port", str(free_port())]  # fmt: skip
                wall_two, two = run([*launch, *cli, "--batch-size", "2"], tmp / f"{trainer}-{engine}")
                rel = max(abs(b - a) / abs(a) for a, b in zip(one["losses"], two["losses"], strict=True))
                fmt = lambda xs: ", ".join(f"{x:.7g}" for x in xs)  # noqa: E731
                print(f"| {trainer} | {engine} | {two['distributed_type']} | {fmt(one['losses'])} | "
                      f"{fmt(two['losses'])} | {rel:.1e} | {weight_diff(one['model_dir'], two['model_dir']):.1e} | "
                      f"{wall_one:.0f} / {wall_two:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
