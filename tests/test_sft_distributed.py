"""HSFT under `accelerate launch` with 2 CPU processes (gloo), DDP, FSDP2 and DeepSpeed ZeRO-3, equals a 1-process run of the same
global batch.

Through the real entry point, `python -m supercorrect.trainers.sft`, with the launch helpers of
tests/test_dpo_distributed.py. The completions have different lengths, so the two processes hold different numbers
of completion tokens: the loss and the gradients must still be those of the whole batch's token mean (transformers
averages the token count across processes). Two epochs of one step each; the second step's loss checks that the
first update was the same. Under FSDP the saved model, gathered from the shards, must equal the 1-process model
(trainers/sft.py `save_final`).

Tolerance as in tests/test_dpo_distributed.py: 1e-4 relative on every logged loss, 1e-4 absolute on the weights.
"""

import json
import sys

import pytest
from test_dpo_distributed import (
    DISTRIBUTED_TYPE,
    ENGINE_PARAMS,
    WEIGHT_ATOL,
    accelerate_2proc,
    max_weight_diff,
    run_ok,
)

SFT_CLI = ["-m", "supercorrect.trainers.sft"]


def loss_curve(out) -> tuple[dict, list[float]]:
    metrics = json.loads((out / "hsft_metrics.json").read_text())
    return metrics, [loss for _, loss in metrics["loss_curve"]]


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft-dist")
    rows = [
        {
            "prompt": f"What is {a} + {b}?",
            "completion": f"<Step1>\nAdd {a} and {b}.\n</Step1>\n" + "<Step2>\nCarry the one.\n</Step2>\n" * (a % 3)
            + f"<Answer>{a + b}</Answer>",
        }
        for a, b in [(2, 3), (10, 7), (41, 1), (6, 6)]
    ]
    data = tmp / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = [*SFT_CLI, "--data", str(data), "--model", str(tiny_model_dir), "--epochs", "2"]
    args += ["--learning-rate", "1e-3", "--warmup-ratio", "0", "--logging-steps", "1"]
    args += ["--bf16", "false"]  # exactness is checked in fp32 (bf16 autocast is the default where the CPU has it)
    run_ok([sys.executable, *args, "--batch-size", "4", "--out", str(tmp / "one")])
    metrics, losses = loss_curve(tmp / "one")
    assert (metrics["world_size"], metrics["global_batch_size"], metrics["steps"]) == (1, 4, 2)
    assert losses[1] != pytest.approx(losses[0], rel=1e-3)  # the first update moved the model
    return args, tmp / "one", losses


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_two_cpu_processes_match_one_process(engine, one_process_run, tmp_path):
    args, one, losses_one = one_process_run
    run_ok([*accelerate_2proc(engine), *args, "--batch-size", "2", "--out", str(tmp_path / "two")])
    metrics, losses = loss_curve(tmp_path / "two")
    assert (metrics["world_size"], metrics["global_batch_size"]) == (2, 4)
    assert metrics["distributed_type"] == DISTRIBUTED_TYPE[engine]
    assert losses == pytest.approx(losses_one, rel=1e-4)
    assert max_weight_diff(one / "model", tmp_path / "two" / "model") < WEIGHT_ATOL


def test_cli_rejects_a_bad_flag_in_one_line(tmp_path):
    import subprocess

    from test_dpo_distributed import dpo_cli_env

    cmd = [sys.executable, *SFT_CLI, "--data", "x.jsonl", "--model", "m", "--out", str(tmp_path), "--batch-size", "0"]
    done = subprocess.run(cmd, env=dpo_cli_env(), capture_output=True, text=True, timeout=600)  # a hang guard
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --batch-size: Input should be greater than or equal to 1"


@pytest.mark.slow
def test_hsft_stage_under_fsdp_launch(tiny_model_dir, tmp_path):
    """The user's command, `accelerate launch ... -m supercorrect.cli hsft CONFIG`: every process runs the CLI, so
    rank 0 alone holds the run lock and prepares the stage folder (before, rank 1 failed on the lock). The loss
    parity itself is the trainer-level test above (same trainer, same launch)."""
    config = tmp_path / "run.yaml"
    config.write_text(
        f"name: r\nrun_root: {tmp_path / 'runs'}\nstudent: {{model: {tiny_model_dir}}}\n"
        "data:\n  train: {kind: synthetic, split: train, n: 4, seed: 0, min_steps: 2, max_steps: 3}\n"
        "hsft: {epochs: 1, batch_size: 2, learning_rate: 1.0e-3, logging_steps: 1, max_length: 512}\n"
    )
    run_ok([sys.executable, "-m", "supercorrect.cli", "templates", str(config)])  # offline, rule-based teacher
    run_ok([*accelerate_2proc("fsdp"), "-m", "supercorrect.cli", "hsft", str(config)])
    stage = tmp_path / "runs" / "r" / "hsft"
    metrics = json.loads((stage / "manifest.json").read_text())["metrics"]
    assert (metrics["world_size"], metrics["global_batch_size"], metrics["steps"]) == (2, 4, 1)
    assert metrics["distributed_type"] == "FSDP"
    assert (stage / "model" / "model.safetensors").exists() and (stage / "model" / "README.md").exists()


def test_other_ranks_neither_lock_nor_clear_the_stage_folder(tmp_path, monkeypatch):
    import threading

    from supercorrect.config import RunConfig
    from supercorrect.io import run_lock
    from supercorrect.stages import Stage

    cfg = RunConfig(name="r", data={}, run_root=str(tmp_path))
    held = run_lock(cfg.run_dir)  # rank 0 of the job
    try:
        monkeypatch.setenv("RANK", "1")
        run_lock(cfg.run_dir).release()  # no "another supercorrect process is using this run folder"
        stage = Stage(cfg, "hsft")
        marker = stage.dir / ".fingerprint"
        stage.dir.mkdir(parents=True)
        (stage.dir / "partial").write_text("stale work that rank 0 decides about")
        marker.write_text("stale\n")
        # Rank 0 marks the folder as prepared a little later; rank 1 must wait for it, not clear the folder.
        # (No clock: start() must not return before the marker is written, whenever that happens.)
        prepared = threading.Event()

        def rank0_prepares() -> None:
            prepared.set()  # before the write: once the marker is there, the flag is
            marker.write_text(stage.fingerprint + "\n")

        rank0 = threading.Timer(0.5, rank0_prepares)
        rank0.start()
        stage.start()
        assert prepared.is_set(), "rank 1 went on before rank 0 had prepared the folder"
        rank0.join()
        assert (stage.dir / "partial").exists()
        stage.finish({})
        assert not stage.manifest_path.exists()  # rank 0 alone writes the manifest
    finally:
        held.release()
