"""tests/planting.py on a real run config: the planted rows are what the stage-2 tests rely on (step 2 says 999,
the answer is 999, one row per problem with unique ids and keys), problems without a step 2 are skipped, and
the files it writes, leaves alone and keeps are the ones its callers compare."""

from __future__ import annotations

from pathlib import Path

import yaml
from planting import plant_wrong_solutions

from supercorrect.config import RunConfig, load_config
from supercorrect.data import load_problems
from supercorrect.io import read_jsonl
from supercorrect.xmlformat import parse, step_texts

ORIGINAL_WRONG = b'{"id": "x", "text": "what the sample stage wrote"}\n'
ORIGINAL_SAMPLES = b'{"id": "x", "text": "every sample"}\n'


def sampled_run(tmp_path: Path) -> RunConfig:
    """A run whose sample stage has written its files; 8 synthetic problems of 1 to 3 steps (seed 0: one has
    a single step, the sixth)."""
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump({
        "name": "plant", "run_root": str(tmp_path / "runs"), "student": {"model": str(tmp_path / "model")},
        "data": {"train": {"kind": "synthetic", "split": "train", "n": 8, "min_steps": 1, "max_steps": 3}},
    }))  # fmt: skip
    cfg = load_config(path)
    (cfg.run_dir / "sample").mkdir(parents=True)
    (cfg.run_dir / "sample" / "wrong.jsonl").write_bytes(ORIGINAL_WRONG)
    (cfg.run_dir / "sample" / "samples.jsonl").write_bytes(ORIGINAL_SAMPLES)
    return cfg


def test_rows_have_step_2_wrong_and_skip_problems_without_a_step_2(tmp_path):
    cfg = sampled_run(tmp_path)
    problems = load_problems(cfg.data["train"], cfg.base_dir)
    assert [len(p.steps) for p in problems] == [3, 2, 3, 3, 3, 1, 3, 2]
    kept = tmp_path / "sampled_wrong.jsonl"
    planted = plant_wrong_solutions(cfg, samples=False, keep_original=kept)

    assert [p.id for p in planted] == [p.id for i, p in enumerate(problems) if i != 5]
    rows = read_jsonl(cfg.run_dir / "sample" / "wrong.jsonl")
    assert [r["id"] for r in rows] == [p.id for p in planted]
    assert len({r["id"] for r in rows}) == len({r["key"] for r in rows}) == 7
    for r, p in zip(rows, planted, strict=True):
        parsed = parse(r["text"])
        assert parsed.answer == "999" and r["predicted"] == "999" and r["answer"] == p.answer != "999"
        steps = step_texts(parsed)
        assert steps[1] == f"{p.steps[1].expr} = 999"
        assert [s for i, s in enumerate(steps) if i != 1] == [
            f"{s.expr} = {s.value}" for i, s in enumerate(p.steps) if i != 1
        ]
        assert (r["sample"], r["key"], r["correct"], r["reason"], r["n_tokens"]) == (0, f"{p.id}#0", False, "wrong", 10)
    # The sample stage's own files: samples.jsonl untouched, wrong.jsonl kept byte for byte.
    assert (cfg.run_dir / "sample" / "samples.jsonl").read_bytes() == ORIGINAL_SAMPLES
    assert kept.read_bytes() == ORIGINAL_WRONG


def test_first_n_with_a_step_2_and_samples_written_too(tmp_path):
    cfg = sampled_run(tmp_path)
    planted = plant_wrong_solutions(cfg, 6)
    ids = [p.id for p in load_problems(cfg.data["train"], cfg.base_dir)]
    assert [p.id for p in planted] == ids[:5] + ids[6:7]  # the sixth has one step: the seventh takes its place
    wrong = (cfg.run_dir / "sample" / "wrong.jsonl").read_bytes()
    assert len(wrong.splitlines()) == 6
    assert (cfg.run_dir / "sample" / "samples.jsonl").read_bytes() == wrong
