"""One problem schema, four sources: synthetic arithmetic, GSM8K files, MATH files, Hugging Face datasets.

`load_problems(spec)` turns a `DataSpec` (the `data:` block of a run config) into a list of `Problem`s.
`load_problems_with_report(spec)` also returns a `LoadReport` counting the rows that were skipped.

Row errors are one-line `UserError`s naming file and line, e.g.
``gsm8k file data/x.jsonl:12: no '####' answer line``; with `skip_bad_rows: true` such rows are skipped and
counted instead. `offset` and `n` select problems after bad rows are dropped: the first `n` good problems
after skipping `offset` good ones (rows past the last one needed are not read).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import UserError
from .schema import Problem, RefStep

SYNTHETIC_DEFAULT_N = 1000


class DataSpec(BaseModel):
    """Where a run's problems come from (the `data:` block of a run config)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["synthetic", "gsm8k", "math", "hf"]
    path: str | None = None  # JSONL file for gsm8k / math (relative: against the loader's base_dir)
    split: str = "train"  # synthetic: "train" | "test"; hf: split name; gsm8k/math: used in ids
    n: int | None = Field(default=None, ge=0)  # how many problems (synthetic: default 1000)
    offset: int = Field(default=0, ge=0)
    seed: int = 0
    min_steps: int = Field(default=2, ge=1)  # synthetic
    max_steps: int = Field(default=5, ge=1)  # synthetic
    name: str | None = None  # hf dataset name
    config_name: str | None = None  # hf config
    fields: dict[str, str] = Field(default_factory=dict)  # hf: question/solution/answer/level/subject -> column
    skip_bad_rows: bool = False  # skip and count malformed rows instead of failing
    optional: bool = False  # gsm8k/math: callers may skip this set with a notice when it cannot be read
    hub: str | None = None  # gsm8k/math: hub dataset read when the file is missing, "name" or "name:config"

    def resolved_path(self, base_dir: Path | None = None) -> Path | None:
        """The data file (gsm8k/math), relative paths taken against `base_dir`; None for other kinds."""
        return _resolve(self.path, base_dir) if self.path and self.kind in ("gsm8k", "math") else None

    def available(self, base_dir: Path | None = None) -> bool:
        """Whether the data can be read here: the file exists (gsm8k/math); always True for synthetic and hf."""
        path = self.resolved_path(base_dir)
        return path is None or path.is_file()

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must be <= max_steps ({self.max_steps})")
        if self.max_steps > MAX_SYNTHETIC_STEPS:
            raise ValueError(f"max_steps must be <= {MAX_SYNTHETIC_STEPS}")
        if self.kind == "synthetic" and self.split not in ("train", "test"):
            raise ValueError(f"synthetic split must be 'train' or 'test', not {self.split!r}")
        if self.kind in ("gsm8k", "math") and not self.path:
            raise ValueError(f"data kind {self.kind!r} needs a 'path' to a JSONL file")
        if self.hub is not None and self.kind not in ("gsm8k", "math"):
            raise ValueError("'hub' is the fallback of a gsm8k/math file; for a hub dataset use kind: hf")
        if self.kind == "hf" and not self.name:
            raise ValueError("data kind 'hf' needs a dataset 'name'")
        unknown = set(self.fields) - set(HF_FIELD_KEYS)
        if unknown:
            raise ValueError(f"unknown fields key(s) {sorted(unknown)}; allowed: {list(HF_FIELD_KEYS)}")
        return self


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
        problems = generate_synthetic(n, spec.seed, spec.split, spec.min_steps, spec.max_steps)
        problems = problems[spec.offset :]
        report = LoadReport("synthetic", "synthetic", rows_read=n, loaded=len(problems))
        if not problems:
            raise UserError(f"no problems loaded from synthetic generator (n={n}, offset={spec.offset})")
        return problems, report
    if spec.kind == "hf":
        return _load_hf(spec)
    return _load_file(spec, base_dir)


# ----------------------------------------------------------------------------------------------- files


def _resolve(path: str, base_dir: Path | None) -> Path:
    """`~` and environment variables expand (e.g. `$SUPERCORRECT_DATA/gsm8k/test.jsonl`); a relative path is
    taken against `base_dir` (the config file's folder)."""
    p = Path(os.path.expanduser(os.path.expandvars(path)))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


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
        if good > spec.offset:
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
    from .grading import extract_boxed  # written alongside; imported lazily

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

HF_FIELD_KEYS = ("question", "solution", "answer", "level", "subject")
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


# ----------------------------------------------------------------------------------------------- synthetic

MAX_SYNTHETIC_STEPS = 8
MAX_VALUE = 10_000


@dataclass(frozen=True)
class _Scenario:
    """One surface template: an opening product step, sentences for each operation, a final question.

    Placeholders: {Name} {pron} {Pron} {poss} {Poss} {obj} {a} {b} {c} {k} {p} {v} {r}. Each op is
    (question sentence, step sentence)."""

    name: str
    intro_q: str
    intro_s: str
    ops: dict[str, tuple[str, str]]
    final_q: str
    a_range: tuple[int, int] = (2, 9)
    b_range: tuple[int, int] = (2, 15)


_SCENARIOS: tuple[_Scenario, ...] = (
    _Scenario(
        "shopping",
        "{Name} buys {a} packs of {b} pencils.",
        "{Name} buys {a} packs of {b} pencils, so {pron} has {a} * {b} = {r} pencils.",
        {
            "add": ("Then {pron} buys {c} more pencils.", "After buying {c} more, {pron} has {v} + {c} = {r} pencils."),
            "sub": ("{Pron} gives {c} pencils to a friend.", "After giving {c} away, {pron} has {v} - {c} = {r} pencils."),
            "mul": (
                "Later {poss} pencil collection grows to {k} times that size.",
                "{k} times as many pencils is {v} * {k} = {r} pencils.",
            ),
            "div": (
                "{Pron} splits {poss} pencils equally into {k} bags and keeps only one bag.",
                "One of {k} equal bags holds {v} / {k} = {r} pencils.",
            ),
            "pct": (
                "{Pron} keeps {p}% of {poss} pencils and donates the rest.",
                "{Pron} keeps {p}% of {v} pencils, which is {v} * {p} / 100 = {r} pencils.",
            ),
        },
        "How many pencils does {Name} have now?",
    ),
    _Scenario(
        "baking",
        "{Name} bakes {a} trays of cookies with {b} cookies on each tray.",
        "{Name} bakes {a} trays of {b} cookies, which is {a} * {b} = {r} cookies.",
        {
            "add": ("{Pron} then bakes {c} more cookies.", "With {c} more cookies, {pron} has {v} + {c} = {r} cookies."),
            "sub": ("{Pron} eats {c} of the cookies.", "After eating {c}, {pron} has {v} - {c} = {r} cookies."),
            "mul": (
                "{Pron} scales up the recipe so that {pron} ends up with {k} times as many cookies.",
                "Scaling up {k} times gives {v} * {k} = {r} cookies.",
            ),
            "div": (
                "{Pron} packs the cookies equally into {k} boxes and gives away all but one box.",
                "Each of the {k} boxes holds {v} / {k} = {r} cookies, and {pron} keeps one box.",
            ),
            "pct": (
                "Only {p}% of the cookies are left after a party.",
                "{p}% of {v} cookies is {v} * {p} / 100 = {r} cookies.",
            ),
        },
        "How many cookies does {Name} have at the end?",
    ),
    _Scenario(
        "travel",
        "A tour bus picks up {a} groups of {b} tourists.",
        "The bus picks up {a} groups of {b}, so it carries {a} * {b} = {r} tourists.",
        {
            "add": ("At the next stop, {c} more tourists get on.", "With {c} more, the bus carries {v} + {c} = {r} tourists."),
            "sub": ("At the museum, {c} tourists get off.", "After {c} get off, the bus carries {v} - {c} = {r} tourists."),
            "div": (
                "The tourists split equally into {k} groups, and the bus keeps only one group.",
                "One of {k} equal groups has {v} / {k} = {r} tourists.",
            ),
            "pct": (
                "Only {p}% of the tourists stay on the bus for the last part of the trip.",
                "{p}% of {v} tourists is {v} * {p} / 100 = {r} tourists.",
            ),
        },
        "How many tourists are on the bus at the end of the trip?",
    ),
    _Scenario(
        "savings",
        "{Name} saves {b} dollars a week for {a} weeks.",
        "{Name} saves {b} dollars for {a} weeks, which is {a} * {b} = {r} dollars.",
        {
            "add": ("{Pron} gets {c} dollars for {poss} birthday.", "With the {c} dollar gift, {pron} has {v} + {c} = {r} dollars."),
            "sub": ("{Pron} spends {c} dollars on a book.", "After spending {c} dollars, {pron} has {v} - {c} = {r} dollars."),
            "mul": (
                "{Poss} grandmother makes {poss} savings {k} times as large.",
                "{k} times {v} dollars is {v} * {k} = {r} dollars.",
            ),
            "div": (
                "{Pron} splits {poss} money equally into {k} jars and takes one jar on a trip.",
                "One of {k} equal jars holds {v} / {k} = {r} dollars.",
            ),
            "pct": (
                "{Pron} keeps {p}% of {poss} money and spends the rest.",
                "{p}% of {v} dollars is {v} * {p} / 100 = {r} dollars.",
            ),
        },
        "How many dollars does {Name} have now?",
    ),
    _Scenario(
        "farm",
        "{Name}'s farm has {a} hens, and each hen lays {b} eggs a week.",
        "The {a} hens lay {a} * {b} = {r} eggs a week.",
        {
            "add": ("{Pron} buys {c} more eggs from a neighbor.", "With {c} more eggs, {pron} has {v} + {c} = {r} eggs."),
            "sub": ("{c} of the eggs break.", "After {c} break, {pron} has {v} - {c} = {r} eggs."),
            "div": (
                "{Pron} packs the eggs equally into {k} crates and sells all but one crate.",
                "One of {k} equal crates holds {v} / {k} = {r} eggs.",
            ),
            "pct": (
                "{Pron} keeps {p}% of the eggs and sells the rest.",
                "{p}% of {v} eggs is {v} * {p} / 100 = {r} eggs.",
            ),
        },
        "How many eggs does {Name} have left?",
    ),
    _Scenario(
        "classroom",
        "{Name}, a teacher, has {a} sheets of stickers with {b} stickers on each sheet.",
        "{a} sheets of {b} stickers make {a} * {b} = {r} stickers.",
        {
            "add": ("{Pron} buys {c} more stickers.", "With {c} more stickers, {pron} has {v} + {c} = {r} stickers."),
            "sub": ("{Pron} gives {c} stickers to the class helper.", "After giving away {c}, {pron} has {v} - {c} = {r} stickers."),
            "div": (
                "{Pron} divides the stickers equally among {k} classes and keeps one share for {poss} own class.",
                "Each of the {k} classes gets {v} / {k} = {r} stickers.",
            ),
            "pct": (
                "{Pron} keeps {p}% of the stickers and gives the rest to another teacher.",
                "{p}% of {v} stickers is {v} * {p} / 100 = {r} stickers.",
            ),
        },
        "How many stickers does {Name} have at the end?",
    ),
    _Scenario(
        "library",
        "A library has {a} shelves with {b} books on each shelf.",
        "{a} shelves of {b} books hold {a} * {b} = {r} books.",
        {
            "add": ("It receives {c} new books.", "With {c} new books, the library has {v} + {c} = {r} books."),
            "sub": ("{c} books are lent out.", "After lending out {c}, the library has {v} - {c} = {r} books."),
            "mul": (
                "After a donation drive, the collection grows to {k} times its size.",
                "{k} times the collection is {v} * {k} = {r} books.",
            ),
            "div": (
                "The books are split equally among {k} branch libraries, and this library keeps one share.",
                "One of {k} equal shares is {v} / {k} = {r} books.",
            ),
            "pct": (
                "Only {p}% of the books are kept; the rest are recycled.",
                "{p}% of {v} books is {v} * {p} / 100 = {r} books.",
            ),
        },
        "How many books does the library have now?",
    ),
    _Scenario(
        "garden",
        "{Name} plants {a} rows of tulips with {b} tulips in each row.",
        "{a} rows of {b} tulips make {a} * {b} = {r} tulips.",
        {
            "add": ("{Pron} plants {c} more tulips.", "With {c} more, {pron} has {v} + {c} = {r} tulips."),
            "sub": ("Rabbits eat {c} of the tulips.", "After the rabbits eat {c}, {pron} has {v} - {c} = {r} tulips."),
            "mul": (
                "By next spring the tulips multiply to {k} times as many.",
                "{k} times as many tulips is {v} * {k} = {r} tulips.",
            ),
            "div": (
                "{Pron} divides the tulips equally into {k} bouquets and keeps one bouquet.",
                "One of {k} equal bouquets has {v} / {k} = {r} tulips.",
            ),
        },
        "How many tulips does {Name} have in the end?",
    ),
)

SYNTHETIC_TEMPLATES: tuple[str, ...] = tuple(s.name for s in _SCENARIOS)

_NAMES: tuple[tuple[str, str], ...] = (
    ("Mia", "she"), ("Leo", "he"), ("Ava", "she"), ("Noah", "he"), ("Zoe", "she"), ("Omar", "he"),
    ("Lena", "she"), ("Ravi", "he"), ("Sara", "she"), ("Tom", "he"), ("Nina", "she"), ("Ben", "he"),
    ("Ines", "she"), ("Kofi", "he"), ("Yuki", "she"), ("Dev", "he"),
)
_PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "his", "him")}
_PERCENTS = (10, 20, 25, 50, 75)


def question_split(question: str) -> str:
    """The split a synthetic question belongs to: 'train' if the first byte of its SHA-256 is even, else
    'test'. The generator drops questions of the other split, so train and test never share a question."""
    return "train" if hashlib.sha256(question.encode("utf-8")).digest()[0] % 2 == 0 else "test"


def _feasible(op: str, v: int, rng: random.Random) -> tuple[int, dict[str, int]] | None:
    """Pick operands for `op` applied to v; None when no operands keep the result a positive integer < 10000."""
    if op == "add":
        c = rng.randint(2, 40)
        return (v + c, {"c": c}) if v + c < MAX_VALUE else None
    if op == "sub":
        if v < 4:
            return None
        c = rng.randint(1, min(v - 2, 40))
        return v - c, {"c": c}
    if op == "mul":
        ks = [k for k in (2, 3, 4) if v * k < MAX_VALUE]
        if not ks or v > 300:
            return None
        k = rng.choice(ks)
        return v * k, {"k": k}
    if op == "div":
        ks = [k for k in range(2, 7) if v % k == 0 and v // k >= 2]
        if not ks:
            return None
        k = rng.choice(ks)
        return v // k, {"k": k}
    if op == "pct":
        ps = [p for p in _PERCENTS if (v * p) % 100 == 0 and v * p // 100 >= 2]
        if not ps:
            return None
        p = rng.choice(ps)
        return v * p // 100, {"p": p}
    raise ValueError(op)


def _expr(op: str, v: int, args: dict[str, int]) -> str:
    if op == "add":
        return f"{v} + {args['c']}"
    if op == "sub":
        return f"{v} - {args['c']}"
    if op == "mul":
        return f"{v} * {args['k']}"
    if op == "div":
        return f"{v} / {args['k']}"
    return f"{v} * {args['p']} / 100"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _one_problem(rng: random.Random, n_steps: int) -> tuple[str, list[RefStep], int, str]:
    scenario = rng.choice(_SCENARIOS)
    name, gender = rng.choice(_NAMES)
    pron, poss, obj = _PRONOUNS[gender]
    words = {"Name": name, "pron": pron, "Pron": _cap(pron), "poss": poss, "Poss": _cap(poss), "obj": obj}
    a, b = rng.randint(*scenario.a_range), rng.randint(*scenario.b_range)
    v = a * b
    sentences = [scenario.intro_q.format(**words, a=a, b=b)]
    steps = [RefStep(text=scenario.intro_s.format(**words, a=a, b=b, r=v), expr=f"{a} * {b}", value=str(v))]
    last_op = "mul"
    used = {a, b, v}  # numbers already in play: a result equal to one of them would make steps ambiguous
    for _ in range(n_steps - 1):
        ops = [op for op in scenario.ops if op != last_op] or list(scenario.ops)
        candidates = []
        for _try in range(8):
            op = rng.choice(ops)
            picked = _feasible(op, v, rng)
            if picked is not None:
                candidates.append((op, picked))
                if picked[0] not in used and not set(picked[1].values()) & {v}:
                    break
        if not candidates:  # every scenario has "add", feasible while v < MAX_VALUE - 40
            candidates.append(("add", _feasible("add", v, rng)))
        op, picked = candidates[-1]
        assert picked is not None
        r, args = picked
        used |= {r, *args.values()}
        q_tpl, s_tpl = scenario.ops[op]
        fmt = {**words, **args, "v": v, "r": r}
        sentences.append(_cap(q_tpl.format(**fmt)))
        steps.append(RefStep(text=_cap(s_tpl.format(**fmt)), expr=_expr(op, v, args), value=str(r)))
        v, last_op = r, op
    sentences.append(scenario.final_q.format(**words))
    return " ".join(sentences), steps, v, scenario.name


def generate_synthetic(
    n: int, seed: int = 0, split: str = "train", min_steps: int = 2, max_steps: int = 5
) -> list[Problem]:
    """`n` seeded multi-step arithmetic word problems (positive integers below 10000, exact divisions), every
    step's expression and value known. Deterministic across processes for the same arguments. Questions are
    unique within a split and never shared between splits (see `question_split`)."""
    if split not in ("train", "test"):
        raise UserError(f"synthetic split must be 'train' or 'test', not {split!r}")
    if not 1 <= min_steps <= max_steps <= MAX_SYNTHETIC_STEPS:
        raise UserError(f"synthetic steps must satisfy 1 <= min_steps <= max_steps <= {MAX_SYNTHETIC_STEPS}")
    rng = random.Random(f"supercorrect-synthetic:{seed}:{split}")
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise UserError(f"could not generate {n} distinct synthetic problems (got {len(problems)})")
        n_steps = rng.randint(min_steps, max_steps)
        question, steps, answer, template = _one_problem(rng, n_steps)
        if question in seen or question_split(question) != split:
            continue
        seen.add(question)
        solution = "\n".join(s.text for s in steps) + f"\nThe answer is {answer}."
        problems.append(
            Problem(
                id=f"synthetic-{split}-{seed}-{len(problems)}",
                question=question,
                solution=solution,
                answer=str(answer),
                steps=steps,
                source="synthetic",
                level=f"{len(steps)} steps",
                subject=template,
            )
        )
    return problems
