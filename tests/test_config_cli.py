"""Config validation and the CLI's one-line errors (exit code 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from supercorrect.cli import main
from supercorrect.config import load_config
from supercorrect.errors import UserError

REPO = Path(__file__).resolve().parents[1]

GOOD = """
name: t
data:
  train: {kind: synthetic, split: train, n: 8}
  test: {kind: synthetic, split: test, n: 4}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_presets_validate():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.name and cfg.data, path


def test_good_config_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), {"hsft.epochs": 1, "teacher.kind": "reference"})
    assert cfg.hsft.epochs == 1
    assert cfg.run_dir.name == "t"
    assert cfg.base_dir == tmp_path


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD + "hsft: {epochz: 2}\n", "hsft.epochz: unknown key"),
        (GOOD + "hsft: {epochs: lots}\n", "hsft.epochs: Input should be a valid number"),
        (GOOD + "teacher: {kind: gpt}\n", "teacher.kind"),
        ("name: t\n", "data: Field required"),
        ("name: [unclosed\n", "invalid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        (GOOD + "name: a/b\n", "name: Value error, must be a plain folder name"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, text, expected):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, text))
    msg = str(e.value)
    assert expected in msg and "\n" not in msg and str(tmp_path) in msg


def test_cli_exit_code_2_without_traceback(tmp_path):
    p = write(tmp_path, GOOD + "hsft: {epochz: 2}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "supercorrect.cli", "templates", str(p)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "unknown key" in proc.stderr


def test_cli_missing_config_and_unknown_stage(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["run", str(write(tmp_path, GOOD)), "--stages", "hsft,frobnicate"]) == 2
    assert "unknown stage 'frobnicate'" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(UserError):
        main(["--debug", "run", str(tmp_path / "nope.yaml")])


def test_missing_model_path_is_one_line(tmp_path):
    from supercorrect.models import resolve_model

    with pytest.raises(UserError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
