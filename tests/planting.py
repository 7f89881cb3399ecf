"""Planted wrong solutions for tests that run stage 2 (or a recipe that corrects the student) on a tiny model.

The tests' student is a tiny randomly initialised model: it writes no steps, so the sample stage's
`wrong.jsonl` holds nothing the teacher could locate and correct, and `correct`, `pairs`, Cross-DPO and the
recipes built on them would have no work. `plant_wrong_solutions` replaces that output, after the sample stage
and before the stages that read it, by wrong step-by-step solutions of the run's training problems: the
reference steps with step 2 miscomputed as `= 999` and the answer 999, rendered in the hierarchical format, one
row per problem (sample 0, key `<id>#0`) in the sample stage's row layout. The same config always gives the
same rows and the same bytes, so two runs that plant them (an uninterrupted and a killed one) stay comparable.

Problems with fewer than two steps are skipped: they have no step 2 to miscompute.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from supercorrect.config import RunConfig
from supercorrect.data import load_problems
from supercorrect.io import write_jsonl
from supercorrect.schema import Problem
from supercorrect.xmlformat import render_solution


def plant_wrong_solutions(
    cfg: RunConfig, n: int | None = None, *, samples: bool = True, keep_original: Path | None = None
) -> list[Problem]:
    """Overwrite `<run>/sample/wrong.jsonl` with wrong solutions of the first `n` training problems that have
    at least two steps (all of them by default), and return those problems.

    `samples`: write the same rows to `sample/samples.jsonl` too, for the stages that read every sample
    (instance-DPO builds its pairs from them); off where a test compares the sample stage's own
    `samples.jsonl` across runs.
    `keep_original`: copy the `wrong.jsonl` the sample stage wrote there first (it must exist), so that a test
    can still compare it across runs."""
    problems = [p for p in load_problems(cfg.data["train"], cfg.base_dir) if len(p.steps) >= 2][:n]
    rows = []
    for p in problems:
        steps = [f"{s.expr} = {s.value}" for s in p.steps]
        steps[1] = steps[1].split("=")[0] + "= 999"
        rows.append({"id": p.id, "sample": 0, "text": render_solution(steps, "999"), "correct": False,
                     "reason": "wrong", "predicted": "999", "answer": p.answer, "key": f"{p.id}#0",
                     "n_tokens": 10})  # fmt: skip
    sample = cfg.run_dir / "sample"
    if keep_original is not None:
        shutil.copyfile(sample / "wrong.jsonl", keep_original)
    write_jsonl(sample / "wrong.jsonl", rows)
    if samples:
        write_jsonl(sample / "samples.jsonl", rows)
    return problems
