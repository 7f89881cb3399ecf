"""The teacher's API key never leaves memory, and no module runs model text as code.

A sentinel key `sk-SENTINEL-<random>` is given to the templates stage (and then the report) through the
environment, against the faulty server (tests/fault_server.py), one of whose faults is a 401 that echoes the
key back. The key must really be sent, and must appear in no file under the run folder (cache, spend ledger,
manifests, outputs), in no output of the command, and in no exception message, including a failing run.
"""

from __future__ import annotations

import ast
import re
import secrets
from pathlib import Path

import pytest
from fault_server import DEFAULT_RATES, KEY_ENV, FaultPlan, FaultServer, run_cli, run_config

from supercorrect.config import load_config
from supercorrect.errors import UserError
from supercorrect.pipeline import run_stage

SRC = Path(__file__).resolve().parents[1] / "src"


def leaks(sentinel: str, *texts: str) -> list[str]:
    """The texts holding the sentinel or its distinctive part."""
    marker = sentinel.removeprefix("sk-SENTINEL-")
    return [t[:200] for t in texts if sentinel in t or marker in t]


def files_with(sentinel: str, root: Path) -> list[Path]:
    marker = sentinel.removeprefix("sk-SENTINEL-").encode()
    return [p for p in root.rglob("*") if p.is_file() and (marker in p.read_bytes() or b"SENTINEL" in p.read_bytes())]


def test_sentinel_key_is_used_but_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = f"sk-SENTINEL-{secrets.token_hex(12)}"
    outputs: list[str] = []
    plan = FaultPlan(seed=5, rates={**DEFAULT_RATES, "unauthorized": 0.05})
    with FaultServer(plan) as srv:
        # a run that succeeds (a few 401s that echo the key are tolerated), then the report
        ok = run_config(tmp_path, srv.url, n=60, name="ok", teacher={"min_success_rate": 0.5})
        for args in (("templates", str(ok)), ("report", str(ok))):
            proc = run_cli(*args, key=sentinel)
            assert proc.returncode == 0, proc.stderr[-3000:]
            outputs += [proc.stdout, proc.stderr]
        dropped = (tmp_path / "runs" / "ok" / "templates" / "dropped.jsonl").read_text()
        assert "Incorrect API key provided: ***" in dropped  # the echoed key was there, and was scrubbed

        # a run that fails (most requests get a 401 that echoes the key), with and without --debug
        srv.plan = FaultPlan(seed=6, rates={"unauthorized": 0.6})
        bad = run_config(tmp_path, srv.url, n=30, name="bad")
        for args in (("templates", str(bad)), ("--debug", "templates", str(bad))):
            proc = run_cli(*args, key=sentinel)
            assert proc.returncode != 0 and "min_success_rate" in proc.stderr
            outputs += [proc.stdout, proc.stderr]

        # the same failure in this process: the exception and everything it chains
        monkeypatch.setenv(KEY_ENV, sentinel)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        with pytest.raises(UserError) as e:
            run_stage(load_config(bad), "templates", force=True)
        chain = [repr(e.value), str(e.value), repr(e.value.__cause__), repr(e.value.__context__)]
        assert "min_success_rate" in str(e.value)

        assert srv.auth_headers[f"Bearer {sentinel}"] > 0, "the key was really sent"
        assert set(srv.auth_headers) == {f"Bearer {sentinel}"}
    assert leaks(sentinel, *outputs, *chain) == []
    assert files_with(sentinel, tmp_path / "runs") == []
    assert (tmp_path / "runs" / "ok" / "teacher_cache").is_dir()
    assert (tmp_path / "runs" / "ok" / "teacher_spend.jsonl").is_file()
    assert (tmp_path / "runs" / "ok" / "report" / "report.md").is_file()


# ---- no module runs text as code ----------------------------------------------------------------------------------

FORBIDDEN_TEXT = [
    (re.compile(r"(?<![\w.])eval\s*\("), "eval("),
    (re.compile(r"(?<![\w.])exec\s*\("), "exec("),
    (re.compile(r"shell\s*=\s*True"), "shell=True"),
    (re.compile(r"\bos\.system\b"), "os.system"),
    (re.compile(r"\bos\.popen\b"), "os.popen"),
]


def python_files() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    return files


def test_no_eval_exec_or_shell_in_src() -> None:
    """A grep over src/ (comments and docstrings included: the words may be written, never called)."""
    hits = []
    for path in python_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern, name in FORBIDDEN_TEXT:
                if pattern.search(line):
                    hits.append(f"{path.relative_to(SRC)}:{n}: {name}: {line.strip()}")
    assert hits == []


def test_no_dynamic_code_calls_in_src() -> None:
    """The same on the syntax tree, so that a call cannot hide behind spacing or aliasing."""
    hits = []
    for path in python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
                if isinstance(f, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                    hits.append(f"{path.name}:{node.lineno}: {name}()")
                if owner == "os" and name in ("system", "popen") or owner == "builtins" and name in ("eval", "exec"):
                    hits.append(f"{path.name}:{node.lineno}: {owner}.{name}()")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        hits.append(f"{path.name}:{node.lineno}: shell={ast.unparse(kw.value)}")
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                hits += [f"{path.name}:{node.lineno}: from os import {a.name}" for a in node.names
                         if a.name in ("system", "popen")]  # fmt: skip
    assert hits == []
