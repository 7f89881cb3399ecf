"""Stages of a run. Each reads the previous stage's artifact and writes its own under `<run_dir>/<stage>/`.

A stage's *fingerprint* hashes the config sections it depends on and the fingerprints of its inputs. When the
folder holds a manifest with the same fingerprint the stage is finished and is skipped; when it holds partial
work with the same fingerprint the stage resumes it; partial work from another fingerprint is cleared.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import UserError
from ..io import atomic_write_text, launch_rank, read_json, sha256_json, write_json


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("supercorrect", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def knobs(cfg: RunConfig) -> dict[str, Any]:
    """The data-budget knobs of the method (issue 12) as this run set them, recorded in every manifest so that a
    model card, the report and `supercorrect compare` can name what stands behind each number from artifacts."""
    return {
        "sample.k": cfg.sample.k,
        "correct.missing_step": cfg.correct.missing_step,
        "pairs.context": cfg.pairs.context,
        "pairs.chosen": cfg.pairs.chosen,
        "cross_dpo.max_pairs": cfg.cross_dpo.max_pairs,
        "cross_dpo.rpo_alpha": cfg.cross_dpo.rpo_alpha,
    }


@dataclass
class Stage:
    """A stage's folder, fingerprint and manifest."""

    cfg: RunConfig
    name: str
    sections: tuple[str, ...] = ()  # config sections this stage depends on
    inputs: tuple[str, ...] = ()  # upstream stages whose artifacts it reads
    extra: dict[str, Any] = field(default_factory=dict)  # anything else that changes the result
    # Whether the run's training `seed` can change what the stage writes. A stage that draws nothing from it
    # (greedy evaluation of the base model, a deterministic or content-cached teacher) does not hash it, so the
    # seeds of a study share it (study.py copies the finished folder instead of recomputing it).
    seeded: bool = True
    t0: float = field(default_factory=time.time)

    @property
    def dir(self) -> Path:
        return self.cfg.run_dir / self.name

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def upstream(self, name: str) -> dict:
        path = self.cfg.run_dir / name / "manifest.json"
        if not path.exists():
            raise UserError(f"stage {self.name!r} needs the output of stage {name!r}: run `supercorrect {name}` first")
        return read_json(path)

    @property
    def config_hash(self) -> str:
        return self.cfg.section_hash(*(("seed",) if self.seeded else ()), *self.sections)

    @property
    def fingerprint(self) -> str:
        return sha256_json(
            {
                "stage": self.name,
                "config": self.config_hash,
                "inputs": {n: self.upstream(n)["fingerprint"] for n in self.inputs},
                "extra": self.extra,
            }
        )[:16]

    def is_done(self) -> bool:
        if not self.manifest_path.exists():
            return False
        try:
            return read_json(self.manifest_path).get("fingerprint") == self.fingerprint
        except (ValueError, OSError):
            return False

    def start(self) -> Stage:
        """Prepare the folder: keep partial work of the same fingerprint, clear anything else.

        Under `accelerate launch` (a training stage on several processes) rank 0 prepares it and the other ranks
        wait until it has, instead of clearing it under rank 0's feet."""
        fp = self.fingerprint
        marker = self.dir / ".fingerprint"
        if launch_rank() != 0:
            deadline = time.time() + 600
            while not (marker.exists() and marker.read_text().strip() == fp):
                if time.time() > deadline:
                    raise UserError(f"{self.dir}: rank 0 did not prepare the stage folder within 10 minutes")
                time.sleep(0.2)
            self.t0 = time.time()
            return self
        if self.dir.exists() and (not marker.exists() or marker.read_text().strip() != fp):
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, fp + "\n")
        self.manifest_path.unlink(missing_ok=True)
        self.t0 = time.time()
        print(f"[{self.name}] -> {self.dir}", file=sys.stderr, flush=True)
        return self

    def finish(self, counts: dict[str, Any], **more: Any) -> dict:
        manifest = {
            "stage": self.name,
            "fingerprint": self.fingerprint,
            "config_hash": self.config_hash,
            "inputs": list(self.inputs),
            "counts": counts,
            # Who made this: `supercorrect compare` names the variant and seed of every number from these.
            "run": {"name": self.cfg.name, "variant": self.cfg.variant or self.cfg.name, "seed": self.cfg.seed},
            "knobs": knobs(self.cfg),
            "seconds": round(time.time() - self.t0, 2),
            "versions": versions(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **more,
        }
        if launch_rank() == 0:  # one writer under `accelerate launch`
            write_json(self.manifest_path, manifest)
        return manifest
