"""Bad input through the real command line: each mistake is ONE line naming the problem and the place (file:line
or config key), exit code 2, no traceback unless --debug, and nothing half-written in the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from supercorrect.io import read_json

SYNTH = {"kind": "synthetic", "split": "train", "n": 6, "max_steps": 3}
GSM8K_ROW = {"question": "Tom has 2 apples and buys 3 more. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "TQDM_DISABLE": "1", **(env or {})}
    full_env.pop("OPENAI_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "supercorrect.cli", *args], capture_output=True, text=True, cwd=cwd, env=full_env,
        timeout=300,
    )  # fmt: skip


def config(tmp_path: Path, text_or_dict: str | dict, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text_or_dict if isinstance(text_or_dict, str) else yaml.safe_dump(text_or_dict))
    return p


def base(tmp_path: Path, **over: object) -> dict:
    cfg: dict = {"name": "bad", "run_root": str(tmp_path / "runs"), "data": {"train": dict(SYNTH)}, **over}
    return cfg


def jsonl(tmp_path: Path, name: str, lines: list[str]) -> Path:
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines))
    return p


def assert_user_error(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 2, one `error:` line containing every expected piece, no traceback; returns the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


def assert_nothing_half_written(tmp_path: Path) -> None:
    """No manifest anywhere, and no file in a stage folder other than resumable shards."""
    runs = tmp_path / "runs"
    if not runs.exists():
        return
    for p in runs.rglob("*"):
        if not p.is_file():
            continue
        assert p.name != "manifest.json", p
        rel = p.relative_to(runs).parts
        if len(rel) > 2:  # runs/<name>/<stage>/...
            assert p.name.endswith(".shard.jsonl") or p.name == ".fingerprint", p


# ---- the config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: [unclosed\ndata: {}\n", ("c.yaml:", "invalid YAML")),
        ("name: x\ndata:\n  train: {kind: synthetic\n  test: 1\n", ("c.yaml:4:", "invalid YAML")),
        ("name: x\n\tdata: 1\n", ("c.yaml:2:", "invalid YAML")),
        ("", ("c.yaml", "expected a mapping")),
    ],
    ids=["unclosed", "line-4", "tab", "empty"],
)
def test_invalid_yaml(tmp_path: Path, text: str, expected: tuple[str, ...]) -> None:
    assert_user_error(cli("templates", str(config(tmp_path, text)), cwd=tmp_path), *expected)
    assert_nothing_half_written(tmp_path)


@pytest.mark.parametrize(
    "over, expected",
    [
        ({"hsft": {"epochz": 2}}, "hsft.epochz: unknown key"),
        ({"teacher": {"max_retries": "many"}}, "teacher.max_retries: Input should be a valid integer"),
        ({"teacher": {"min_success_rate": 1.5}}, "teacher.min_success_rate: Input should be less than or equal to 1"),
        ({"teacher": {"max_spend_usd": 5}}, "teacher: Value error, max_spend_usd needs price_in_per_1m"),
        ({"data": {"train": {**SYNTH, "pth": "x.jsonl"}}}, "data.train.pth: unknown key"),
        ({"data": {"train": {"kind": "gsm8k"}}}, "data.train: Value error, data kind 'gsm8k' needs a 'path'"),
        ({"templates": {"data": "nope"}}, "templates.data: no data set named 'nope'"),
        ({"stages": ["templates", "frobnicate"]}, "stages: unknown stage 'frobnicate'"),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range", "cap-without-prices", "unknown-data-key", "gsm8k-no-path",
         "unknown-set", "unknown-stage"],  # fmt: skip
)
def test_unknown_or_mistyped_keys(tmp_path: Path, over: dict, expected: str) -> None:
    command = "run" if "stages" in over else "templates"
    assert_user_error(cli(command, str(config(tmp_path, base(tmp_path, **over))), cwd=tmp_path), expected)
    assert_nothing_half_written(tmp_path)


def test_config_file_problems(tmp_path: Path) -> None:
    assert_user_error(cli("templates", str(tmp_path / "nope.yaml"), cwd=tmp_path), "nope.yaml: config file not found")
    (tmp_path / "folder.yaml").mkdir()
    assert_user_error(cli("templates", str(tmp_path / "folder.yaml"), cwd=tmp_path), "folder.yaml: cannot read the config")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\ndata: {}\n")
    assert_user_error(cli("templates", str(bad), cwd=tmp_path), "latin1.yaml: not UTF-8 text")
    good = config(tmp_path, base(tmp_path))
    assert_user_error(cli("templates", str(good), "--set", "hsft=[1", cwd=tmp_path), "--set 'hsft=[1'", "YAML")
    assert_user_error(
        cli("templates", str(good), "--set", "hsft=3", "--set", "hsft.epochs=2", cwd=tmp_path),
        "--set hsft.epochs=2", "'hsft' is not a mapping",
    )
    assert_nothing_half_written(tmp_path)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = cli("--debug", "templates", str(config(tmp_path, base(tmp_path, hsft={"epochz": 2}))), cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "UserError" in proc.stderr


# ---- the data --------------------------------------------------------------------------------------------------


def gsm8k(tmp_path: Path, path: Path | str, **more: object) -> Path:
    return config(tmp_path, base(tmp_path, data={"train": {"kind": "gsm8k", "path": str(path), **more}}))


def test_missing_data_file(tmp_path: Path) -> None:
    proc = cli("templates", str(gsm8k(tmp_path, "data/none.jsonl")), cwd=tmp_path)
    assert_user_error(proc, "data.train: gsm8k file data/none.jsonl: file not found", str(tmp_path / "data" / "none.jsonl"))
    assert_nothing_half_written(tmp_path)


def test_malformed_rows_fail_with_file_and_line(tmp_path: Path) -> None:
    rows = [json.dumps(GSM8K_ROW), json.dumps(GSM8K_ROW), "{not json", "[1, 2]", json.dumps(GSM8K_ROW)]
    data = jsonl(tmp_path, "train.jsonl", rows)
    proc = cli("templates", str(gsm8k(tmp_path, data)), cwd=tmp_path)
    assert_user_error(proc, f"{data}:3: malformed JSON", "skip_bad_rows")
    assert_nothing_half_written(tmp_path)


def test_malformed_rows_skipped_and_counted(tmp_path: Path) -> None:
    no_answer = json.dumps({"question": "How many?", "answer": "2 + 3 = 5"})
    rows = [json.dumps(GSM8K_ROW), "{not json", "[1, 2]", no_answer, json.dumps(GSM8K_ROW)]
    data = jsonl(tmp_path, "train.jsonl", rows)
    proc = cli("templates", str(gsm8k(tmp_path, data, skip_bad_rows=True)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    man = read_json(tmp_path / "runs" / "bad" / "templates" / "manifest.json")
    assert man["counts"]["problems"] == 2 and man["counts"]["skipped_rows"] == 3
    assert [s["line"] for s in man["data"]["skipped"]] == [2, 3, 4]
    assert "no '####' answer line" in man["data"]["skipped"][2]["reason"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"kind": "gsm8k", "path": "empty.jsonl"}, "no problems loaded from gsm8k file empty.jsonl"),
        ({"kind": "gsm8k", "path": "blank.jsonl"}, "no problems loaded from gsm8k file blank.jsonl"),
        ({"kind": "gsm8k", "path": "allbad.jsonl", "skip_bad_rows": True}, "(2 malformed rows skipped)"),
        ({"kind": "synthetic", "n": 0}, "data.train: no problems loaded from synthetic generator"),
        ({"kind": "gsm8k", "path": "empty.jsonl", "offset": 5}, "no problems loaded"),
    ],
    ids=["empty-file", "blank-lines", "all-rows-bad", "synthetic-n0", "offset-past-end"],
)
def test_empty_datasets(tmp_path: Path, spec: dict, expected: str) -> None:
    jsonl(tmp_path, "empty.jsonl", [])
    jsonl(tmp_path, "blank.jsonl", ["", "   "])
    jsonl(tmp_path, "allbad.jsonl", ["{", "{"])
    proc = cli("templates", str(config(tmp_path, base(tmp_path, data={"train": spec}))), cwd=tmp_path)
    assert_user_error(proc, expected)
    assert_nothing_half_written(tmp_path)


def test_dataset_without_answers(tmp_path: Path) -> None:
    data = jsonl(tmp_path, "train.jsonl", [json.dumps({"question": "How many?", "answer": "2 + 3 = 5"})])
    assert_user_error(cli("templates", str(gsm8k(tmp_path, data)), cwd=tmp_path), f"{data}:1: no '####' answer line")
    data = jsonl(tmp_path, "nofield.jsonl", [json.dumps({"question": "How many?"})])
    assert_user_error(cli("templates", str(gsm8k(tmp_path, data)), cwd=tmp_path), f"{data}:1: missing 'answer' field")
    math = jsonl(tmp_path, "math.jsonl", [json.dumps({"problem": "What is 2+3?", "solution": "It is five."})])
    cfg = config(tmp_path, base(tmp_path, data={"train": {"kind": "math", "path": str(math)}}))
    assert_user_error(cli("templates", str(cfg), cwd=tmp_path), f"{math}:1: no 'answer' field and no \\boxed{{}}")
    assert_nothing_half_written(tmp_path)


# ---- models and teachers ------------------------------------------------------------------------------------------


def test_student_model_path_does_not_exist(tmp_path: Path) -> None:
    cfg = config(tmp_path, base(tmp_path, student={"model": "./no-such-model"}, evaluate={"sets": ["train"]}))
    assert_user_error(cli("evaluate", str(cfg), "--model", "base", cwd=tmp_path), "student.model:", "./no-such-model does not exist")
    (tmp_path / "not-a-model").mkdir()
    cfg = config(tmp_path, base(tmp_path, student={"model": str(tmp_path / "not-a-model")}, evaluate={"sets": ["train"]}))
    assert_user_error(cli("evaluate", str(cfg), "--model", "base", cwd=tmp_path), "student.model:", "no config.json")
    assert_nothing_half_written(tmp_path)


def test_teacher_model_path_does_not_exist(tmp_path: Path) -> None:
    cfg = config(tmp_path, base(tmp_path, teacher={"kind": "local", "model": "./no-such-teacher"}))
    assert_user_error(cli("templates", str(cfg), cwd=tmp_path), "teacher.model:", "./no-such-teacher does not exist")
    cfg = config(tmp_path, base(tmp_path, teacher={"kind": "openai"}))
    assert_user_error(cli("templates", str(cfg), cwd=tmp_path), "teacher.model is required")
    assert_nothing_half_written(tmp_path)


def test_teacher_api_key_missing(tmp_path: Path) -> None:
    teacher = {"kind": "openai", "model": "m", "base_url": "https://api.example.invalid/v1", "api_key_env": "SC_NO_KEY"}
    cfg = config(tmp_path, base(tmp_path, teacher=teacher))
    proc = cli("templates", str(cfg), cwd=tmp_path, env={"SC_NO_KEY": ""})
    assert_user_error(proc, "API key is missing", "SC_NO_KEY")
    assert_nothing_half_written(tmp_path)
