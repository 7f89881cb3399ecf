"""The loaders: one problem schema, four sources: synthetic arithmetic (`data/synthetic.py`), GSM8K files, MATH
files, Hugging Face datasets.

`load_problems(spec)` turns a `DataSpec` (the `data:` block of a run config) into a list of `Problem`s.
`load_problems_with_report(spec)` also returns a `LoadReport` counting the rows that were skipped.

Row errors are one-line `UserError`s naming file and line, e.g.
``gsm8k file data/x.jsonl:12: no '####' answer line``; with `skip_bad_rows: true` such rows are skipped and
counted instead. `offset` and `n` select problems after bad rows are dropped: the first `n` good problems
after skipping `offset` good ones (rows past the last one needed are not read). `skip` drops the first `skip`
problems before `n` is taken, for every kind (synthetic too, where `offset` counts within `n`): a set with
`skip: N` is disjoint from the same set's first N problems.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..grading import extract_boxed
from ..schema import Problem, RefStep
from .spec import DataSpec
from .synthetic import SYNTHETIC_DEFAULT_N, generate_synthetic


@dataclass
class LoadReport:
    """What a load did: rows examined, problems kept, and the rows skipped (line number or row index, reason)."""

    source: str
    location: str  # file path or "hf:<name>/<split>" or "synthetic"
    rows_read: int = 0
    loaded: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


class _RowError(Exception):
    """A row that cannot become a Problem; the loader adds file and line."""


def load_problems(spec: DataSpec, base_dir: Path | None = None) -> list[Problem]:
    """Load the problems a `DataSpec` names (see `load_problems_with_report`)."""
    return load_problems_with_report(spec, base_dir)[0]


def load_problems_with_report(spec: DataSpec, base_dir: Path | None = None) -> tuple[list[Problem], LoadReport]:
    """Load problems and a report of skipped rows. Raises UserError for a missing file, a bad row (unless
    `skip_bad_rows`) or an empty result."""
    if spec.kind == "synthetic":
        n = SYNTHETIC_DEFAULT_N if spec.n is None else spec.n
        # The generator's stream is deterministic and prefix-stable: the first skip + n problems, less the first skip.
        problems = generate_synthetic(spec.skip + n, spec.seed, spec.split, spec.min_steps, spec.max_steps)
        problems = problems[spec.skip + spec.offset :]
        report = LoadReport("synthetic", "synthetic", rows_read=spec.skip + n, loaded=len(problems))
        if not problems:
            raise UserError(f"no problems loaded from synthetic generator (n={n}, offset={spec.offset}, skip={spec.skip})")
        return problems, report
    if spec.kind == "hf":
        return _load_hf(spec)
    return _load_file(spec, base_dir)


# ----------------------------------------------------------------------------------------------- files


def _iter_jsonl_lines(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, row or None, error) for every non-blank line; a torn last line (no newline) is dropped."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn_last = bool(text) and not text.endswith("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            if torn_last and i == len(lines):
                return
            yield i, None, f"malformed JSON ({str(e).splitlines()[0]})"
            continue
        if not isinstance(row, dict):
            yield i, None, "row is not a JSON object"
            continue
        yield i, row, ""


def _file_split(spec: DataSpec, path: Path) -> str:
    """The split named in ids: the spec's if set explicitly, else the file's stem when it is train/test."""
    if "split" not in spec.model_fields_set and path.stem in ("train", "test", "validation", "dev"):
        return path.stem
    return spec.split


def _load_file(spec: DataSpec, base_dir: Path | None) -> tuple[list[Problem], LoadReport]:
    assert spec.path is not None  # checked by DataSpec
    shown = spec.path
    path = spec.resolved_path(base_dir)
    assert path is not None
    label = f"{spec.kind} file {shown}"
    if not path.is_file():
        extra = f" (looked at {path})" if str(path) != shown else ""
        if spec.hub:
            return _load_file_from_hub(spec, f"{label}: file not found{extra}")
        raise UserError(f"{label}: file not found{extra}")
    split = _file_split(spec, path)
    row_to_problem = gsm8k_row_to_problem if spec.kind == "gsm8k" else math_row_to_problem
    convert = partial(row_to_problem, split=split)
    report = LoadReport(spec.kind, str(path))
    rows = ((line, row, err) for line, row, err in _iter_jsonl_lines(path))
    problems = _collect(rows, convert, spec, report, lambda line: f"{label}:{line}")
    if not problems:
        raise UserError(f"no problems loaded from {label}{_skipped_note(report)}")
    return problems, report


# Hub loads that failed in this process, and why: offline, each attempt costs ~25 s of retries, and a pipeline
# evaluates the same optional set once per model.
_HUB_FAILURES: dict[str, str] = {}


def _load_file_from_hub(spec: DataSpec, missing: str) -> tuple[list[Problem], LoadReport]:
    """The file's rows from the hub instead (`hub: openai/gsm8k:main`): same row format, same ids."""
    assert spec.hub is not None
    name, _, config = spec.hub.partition(":")
    where = f"hub {spec.hub} split {spec.split}"
    if where not in _HUB_FAILURES:
        try:
            import datasets

            rows = datasets.load_dataset(name, config or None, split=spec.split)
        except Exception as e:  # no `datasets`, offline, unknown name: say what was missing and why the hub failed
            _HUB_FAILURES[where] = str(e).splitlines()[0] if str(e) else type(e).__name__
    if where in _HUB_FAILURES:
        raise UserError(f"{missing}, and cannot load {where}: {_HUB_FAILURES[where]}")
    row_to_problem = gsm8k_row_to_problem if spec.kind == "gsm8k" else math_row_to_problem
    report = LoadReport(spec.kind, where)
    indexed = ((i, dict(row), "") for i, row in enumerate(rows))
    problems = _collect(indexed, partial(row_to_problem, split=spec.split), spec, report, lambda i: f"{where} row {i}")
    if not problems:
        raise UserError(f"no problems loaded from {where}{_skipped_note(report)}")
    return problems, report


def load_optional(spec: DataSpec, base_dir: Path | None = None) -> tuple[list[Problem] | None, str]:
    """(problems, "") or, for an `optional` set that cannot be read (file missing and no reachable hub fallback),
    (None, why). Anything else wrong with the data (a malformed row, an empty file) still raises."""
    if spec.optional and not spec.available(base_dir):
        try:
            return load_problems(spec, base_dir), ""
        except UserError as e:
            return None, str(e)
    return load_problems(spec, base_dir), ""


def _collect(
    rows: Iterable[tuple[int, dict | None, str]],
    convert: Callable[[dict, int], Problem],
    spec: DataSpec,
    report: LoadReport,
    where: Callable[[int], str],
) -> list[Problem]:
    """Convert rows in order, skipping `offset` good problems and stopping after `n`."""
    problems: list[Problem] = []
    good = 0
    for index, (line, row, err) in enumerate(rows):
        if spec.n is not None and len(problems) >= spec.n:
            break
        report.rows_read += 1
        problem = None
        if row is not None:
            try:
                problem = convert(row, index)
            except _RowError as e:
                err = str(e)
        if problem is None:
            if not spec.skip_bad_rows:
                raise UserError(f"{where(line)}: {err} (set skip_bad_rows: true to skip such rows)")
            report.skipped.append((line, err))
            continue
        good += 1
        if good > spec.offset + spec.skip:
            problems.append(problem)
    report.loaded = len(problems)
    return problems


def _skipped_note(report: LoadReport) -> str:
    return f" ({report.n_skipped} malformed rows skipped)" if report.skipped else ""


def _text_field(row: dict, key: str, *, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise _RowError(f"missing {key!r} field")
        return None
    if not isinstance(value, str):
        raise _RowError(f"field {key!r} is not a string")
    return value


# ----------------------------------------------------------------------------------------------- GSM8K

_ANNOTATION = re.compile(r"<<(.*?)>>")
_FINAL = re.compile(r"^\s*####\s*(.*?)\s*$", re.MULTILINE)


def parse_gsm8k_solution(solution: str) -> tuple[list[RefStep], str]:
    """Split a GSM8K worked solution into steps (annotations removed from the text; expr/value from each
    line's last `<<expr=value>>`) and the final answer after '####' (commas stripped)."""
    finals = list(_FINAL.finditer(solution))
    if not finals:
        raise _RowError("no '####' answer line")
    last = finals[-1]
    answer = last.group(1).replace(",", "").strip()
    if not answer:
        raise _RowError("empty answer after '####'")
    steps: list[RefStep] = []
    for line in solution[: last.start()].split("\n"):
        if not line.strip() or line.lstrip().startswith("####"):
            continue
        expr = value = None
        for ann in _ANNOTATION.findall(line):
            lhs, eq, rhs = ann.partition("=")
            if eq and lhs.strip() and rhs.strip():
                expr, value = lhs.strip(), rhs.strip().replace(",", "")
        text = re.sub(r"\s+", " ", _ANNOTATION.sub("", line)).strip()
        steps.append(RefStep(text=text, expr=expr, value=value))
    return steps, answer


def gsm8k_row_to_problem(row: dict, index: int, split: str = "train") -> Problem:
    """A GSM8K row (`question`, `answer` = worked solution ending in '#### N') as a Problem."""
    question = _text_field(row, "question")
    solution = _text_field(row, "answer")
    assert question is not None and solution is not None
    if not question.strip():
        raise _RowError("empty 'question'")
    steps, answer = parse_gsm8k_solution(solution)
    return Problem(
        id=f"gsm8k-{split}-{index}",
        question=question.strip(),
        solution=solution,
        answer=answer,
        steps=steps,
        source="gsm8k",
    )


# ----------------------------------------------------------------------------------------------- MATH


def _level(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return f"Level {value}"
    return str(value)


def _boxed(solution: str) -> str | None:
    return extract_boxed(solution)


def math_row_to_problem(row: dict, index: int, split: str = "test") -> Problem:
    """A MATH row (`problem`, `solution`, optional `answer`, `level`, `type`/`subject`, `unique_id`/`idx`)."""
    question = _text_field(row, "problem")
    solution = _text_field(row, "solution")
    assert question is not None and solution is not None
    if not question.strip():
        raise _RowError("empty 'problem'")
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str):
        answer = str(answer)
    if not answer or not answer.strip():
        answer = _boxed(solution)
        if not answer:
            raise _RowError("no 'answer' field and no \\boxed{} answer in 'solution'")
    if row.get("unique_id") is not None:
        pid = f"math-{row['unique_id']}"
    elif row.get("idx") is not None:
        pid = f"math-{split}-{row['idx']}"
    else:
        pid = f"math-{split}-{index}"
    subject = row.get("subject") or row.get("type")
    return Problem(
        id=pid,
        question=question.strip(),
        solution=solution,
        answer=answer.strip(),
        steps=[],
        source="math",
        level=_level(row.get("level")),
        subject=str(subject) if subject else None,
    )


# ----------------------------------------------------------------------------------------------- HF

_HF_DEFAULTS: dict[str, tuple[str, ...]] = {
    "question": ("question", "problem"),
    "solution": ("solution",),
    "answer": ("answer",),
    "level": ("level",),
    "subject": ("subject", "type"),
}


def _hf_column(row: dict, key: str, fields: dict[str, str]) -> Any:
    if key in fields:
        column = fields[key]
        if column not in row:
            raise _RowError(f"column {column!r} (fields.{key}) not in row; columns: {sorted(row)}")
        return row[column]
    for column in _HF_DEFAULTS[key]:
        if column in row:
            return row[column]
    return None


def hf_row_to_problem(row: dict, index: int, *, name: str, split: str, fields: dict[str, str]) -> Problem:
    """A Hugging Face dataset row as a Problem, through the `fields` mapping (default columns
    question|problem, solution, answer, level, subject|type). A solution or answer column in GSM8K form
    ('... #### N') gives checkable steps; otherwise the answer is the answer column or the solution's last
    \\boxed{}."""
    question = _hf_column(row, "question", fields)
    if not isinstance(question, str) or not question.strip():
        raise _RowError("missing or empty question")
    solution = _hf_column(row, "solution", fields)
    answer = _hf_column(row, "answer", fields)
    solution = "" if solution is None else str(solution)
    answer = None if answer is None else str(answer)
    steps: list[RefStep] = []
    if _FINAL.search(solution):
        steps, answer = parse_gsm8k_solution(solution)
    elif answer is not None and _FINAL.search(answer):  # GSM8K on the hub: the worked solution is in `answer`
        solution = answer
        steps, answer = parse_gsm8k_solution(answer)
    if not answer or not answer.strip():
        answer = _boxed(solution) if solution else None
        if not answer:
            raise _RowError("no answer (no answer column and no \\boxed{} in the solution)")
    subject = _hf_column(row, "subject", fields)
    return Problem(
        id=f"hf:{name}:{split}:{index}",
        question=question.strip(),
        solution=solution,
        answer=answer.strip(),
        steps=steps,
        source=f"hf:{name}",
        level=_level(_hf_column(row, "level", fields)),
        subject=str(subject) if subject else None,
    )


def _load_hf(spec: DataSpec) -> tuple[list[Problem], LoadReport]:
    assert spec.name is not None
    try:
        import datasets
    except ImportError:
        raise UserError("data kind 'hf' needs the 'datasets' package (pip install datasets)") from None
    where = f"hf:{spec.name}" + (f"/{spec.config_name}" if spec.config_name else "") + f" split {spec.split}"
    try:
        ds = datasets.load_dataset(spec.name, spec.config_name, split=spec.split)
    except Exception as e:  # any hub, network or format failure is the user's to fix
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot load {where}: {first}") from None
    problems, report = problems_from_rows(ds, spec, where)
    return problems, report


def problems_from_rows(rows: Iterable[dict], spec: DataSpec, where: str) -> tuple[list[Problem], LoadReport]:
    """Convert hub rows (any iterable of dicts, e.g. a `datasets.Dataset`) with the spec's field mapping."""
    name = spec.name or "dataset"
    report = LoadReport(f"hf:{name}", where)

    def convert(row: dict, i: int) -> Problem:
        return hf_row_to_problem(row, i, name=name, split=spec.split, fields=spec.fields)

    indexed = ((i, dict(row), "") for i, row in enumerate(rows))
    problems = _collect(indexed, convert, spec, report, lambda i: f"{where} row {i}")
    if not problems:
        raise UserError(f"no problems loaded from {where}{_skipped_note(report)}")
    return problems, report
