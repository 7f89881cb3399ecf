"""The `data:` block of a run config: where a set of problems comes from (`DataSpec`).

Apart from the loaders (`data/loaders.py`) so that the run config needs only this small module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SYNTHETIC_STEPS = 8  # longest synthetic problem, in steps
HF_FIELD_KEYS = ("question", "solution", "answer", "level", "subject")  # `fields:` keys of an hf data set


class DataSpec(BaseModel):
    """Where a run's problems come from (the `data:` block of a run config)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["synthetic", "gsm8k", "math", "hf"]
    path: str | None = None  # JSONL file for gsm8k / math (relative: against the loader's base_dir)
    split: str = "train"  # synthetic: "train" | "test"; hf: split name; gsm8k/math: used in ids
    n: int | None = Field(default=None, ge=0)  # how many problems (synthetic: default 1000)
    offset: int = Field(default=0, ge=0)
    # Drop the first `skip` problems of the source before taking `n` (synthetic: of the generator's deterministic
    # stream), so {seed: 0, n: 200, skip: 200} is disjoint from {seed: 0, n: 200} by construction: a dev split from
    # the training distribution that is never trained on. Ids stay those of the full stream, hence unique.
    skip: int = Field(default=0, ge=0)
    seed: int = 0
    min_steps: int = Field(default=2, ge=1)  # synthetic
    max_steps: int = Field(default=5, ge=1)  # synthetic
    name: str | None = None  # hf dataset name
    config_name: str | None = None  # hf config
    fields: dict[str, str] = Field(default_factory=dict)  # hf: question/solution/answer/level/subject -> column
    skip_bad_rows: bool = False  # skip and count malformed rows instead of failing
    optional: bool = False  # gsm8k/math: callers may skip this set with a notice when it cannot be read
    hub: str | None = None  # gsm8k/math: hub dataset read when the file is missing, "name" or "name:config"

    def fingerprint(self) -> dict:
        """What a stage hashes for this set: the spec without keys at a default that came later (`skip: 0`), so
        that runs fingerprinted before such a key existed stay finished."""
        dump = self.model_dump()
        if not self.skip:
            dump.pop("skip")
        return dump

    def resolved_path(self, base_dir: Path | None = None) -> Path | None:
        """The data file (gsm8k/math), relative paths taken against `base_dir`; None for other kinds."""
        return resolve_path(self.path, base_dir) if self.path and self.kind in ("gsm8k", "math") else None

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


def resolve_path(path: str, base_dir: Path | None) -> Path:
    """`~` and environment variables expand (e.g. `$SUPERCORRECT_DATA/gsm8k/test.jsonl`); a relative path is
    taken against `base_dir` (the config file's folder)."""
    p = Path(os.path.expanduser(os.path.expandvars(path)))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p
