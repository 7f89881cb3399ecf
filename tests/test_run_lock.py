"""Two processes on one run folder: while a `supercorrect run` holds the folder's lock (here: held inside a
teacher call by a gated stub server), a second `run` or stage command exits with code 2 and one line saying
so, and touches nothing; the first then finishes normally with its artifacts intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from servers import StubServer, completion

from supercorrect.io import read_json, read_jsonl

KEY_ENV = "SC_LOCK_TEST_KEY"
MESSAGE = "another supercorrect process is using this run folder"
TEMPLATE = "<Step1>\n2 + 3 = 5\n</Step1>\n<Generalized>Add.</Generalized>\n<Answer>5</Answer>"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "supercorrect.cli", *args]


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_second_process_on_a_locked_run_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    gate = threading.Event()
    stub = StubServer([(200, {}, completion(TEMPLATE))], gate=gate)
    config = tmp_path / "lock.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "locked",
                "run_root": str(tmp_path / "runs"),
                "student": {"model": str(tiny_model_dir)},
                "teacher": {"kind": "openai", "model": "stub", "base_url": stub.url, "api_key_env": KEY_ENV},
                "data": {"train": {"kind": "synthetic", "split": "train", "n": 3, "max_steps": 2}},
                "stages": ["templates"],
            }
        )
    )
    run_dir = tmp_path / "runs" / "locked"
    env = {**os.environ, KEY_ENV: "sk-test-lock", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"
    with log.open("wb") as out:
        first = subprocess.Popen(cli("run", str(config)), cwd=tmp_path, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        assert stub.arrived.wait(timeout=300), log.read_text(errors="replace")[-3000:]
        assert first.poll() is None
        before = files(run_dir)
        for command in ("run", "templates"):
            second = subprocess.run(cli(command, str(config)), cwd=tmp_path, env=env, capture_output=True,
                                    text=True, timeout=300)  # fmt: skip
            assert second.returncode == 2, second.stderr[-3000:]
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and MESSAGE in lines[0], second.stderr
            assert str(run_dir) in lines[0]
        assert files(run_dir) == before, "the refused process changed the run folder"
        assert stub.chat_requests() == 3  # the first process's requests only, all still held
        assert first.poll() is None, "the first run did not hold the lock all along"

        gate.set()
        assert first.wait(timeout=300) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        stub.stop()

    manifest = read_json(run_dir / "templates" / "manifest.json")
    kept = read_jsonl(run_dir / "templates" / "hsft.jsonl")
    dropped = read_jsonl(run_dir / "templates" / "dropped.jsonl")
    assert manifest["counts"]["problems"] == 3 == len(kept) + len(dropped)
    assert manifest["counts"]["kept"] == len(kept) and manifest["counts"]["dropped"] == len(dropped)
    assert stub.chat_requests() == 3

    # With the lock free again, a run goes through and finds the stage finished and its artifacts sound.
    again = subprocess.run(cli("run", str(config)), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[templates] up to date, skipped" in again.stderr
    assert stub.chat_requests() == 3
