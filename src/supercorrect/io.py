"""Files: atomic writes, JSONL read/append, content hashes, the run-folder lock.

Every artifact is written to a temporary file in the same folder and renamed into place, so a killed run never
leaves a half-written file where a later run would read it. Append-only JSONL shards (for resumable work) are
flushed row by row; a torn last line is ignored on read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .errors import UserError


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False, default=str) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: str | os.PathLike, *, skip_bad: bool = False, bad: list | None = None) -> list[dict]:
    """Read a JSONL file. A malformed row is a one-line UserError naming file and line, unless `skip_bad`
    (then it is skipped and its line number appended to `bad`). A torn final line (no newline) from a killed
    append is always ignored."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    rows: list[dict] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn_last = not text.endswith("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("row is not a JSON object")
        except ValueError as e:
            if torn_last and i == len(lines):
                break
            if skip_bad:
                if bad is not None:
                    bad.append(i)
                continue
            raise UserError(f"{path}:{i}: malformed JSONL row ({str(e).splitlines()[0]})") from None
        rows.append(row)
    return rows


def iter_jsonl_tolerant(path: str | os.PathLike) -> Iterator[dict]:
    """Rows of an append-only shard; a missing file is empty, a torn or bad line is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


class JsonlAppender:
    """Append rows to a shard, one flushed line each, so that work survives a kill."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Drop a torn last line left by a kill, so the next row starts on a fresh line.
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                with self.path.open("r+b") as f:
                    f.truncate(cut)
        self._f = self.path.open("a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._f.flush()

    def append_many(self, rows: Iterable[dict]) -> None:
        """Several rows in one write: a kill leaves at most a torn last line, which readers ignore."""
        self._f.write("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def sha256_file(path: str | os.PathLike, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            if limit is not None and f.tell() >= limit:
                break
    return h.hexdigest()


def launch_rank() -> int:
    """This process's rank in an `accelerate launch` / torchrun job; 0 when it runs alone."""
    return int(os.environ.get("RANK", "0"))


class _HeldByRankZero:
    def release(self) -> None:
        pass


def run_lock(run_dir: str | os.PathLike) -> FileLock | _HeldByRankZero:
    """An exclusive lock on a run folder: a second run pointed at it fails at once with a clear message.

    Under `accelerate launch` every process runs the same command: rank 0 holds the lock for the whole job (the
    other ranks taking it too would fail as a "second run")."""
    if launch_rank() != 0:
        return _HeldByRankZero()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"{run_dir}: another supercorrect process is using this run folder (lock {run_dir / '.lock'})") from None
    return lock
