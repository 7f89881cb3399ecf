"""Generation backends and resumable generation; the local-model teacher built on them."""

from __future__ import annotations

import pytest

from supercorrect.generation import SamplingSettings, TransformersBackend, generate_resumable
from supercorrect.io import JsonlAppender, iter_jsonl_tolerant


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), batch_size=4)


def test_batched_generation_shapes_and_stop(backend):
    prompts = ["Hello there", "What is 2 + 3?", "A much longer prompt " * 5]
    out = backend.generate(prompts, SamplingSettings(n=3, temperature=1.0, max_new_tokens=8, seed=1))
    assert [len(o) for o in out] == [3, 3, 3]
    for comps in out:
        for c in comps:
            assert 0 <= c.n_tokens <= 8 and c.finish in ("stop", "length")
    again = backend.generate(prompts, SamplingSettings(n=3, temperature=1.0, max_new_tokens=8, seed=1))
    assert [[c.text for c in o] for o in out] == [[c.text for c in o] for o in again]  # seeded
    greedy = backend.generate(prompts, SamplingSettings(max_new_tokens=6))
    assert all(len(o) == 1 for o in greedy)


def test_resume_gives_the_same_samples(backend, tmp_path):
    items = [(f"p{i}", f"Problem {i}: what is {i} + {i}?") for i in range(10)]
    s = SamplingSettings(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    full, stats = generate_resumable(backend, items, s, tmp_path / "full.jsonl", chunk=4)
    assert stats["resumed"] == 0 and len(full) == 10
    # A run killed after its first chunk and a torn half-written row: the resumed run regenerates the rest
    # (and the torn chunk) with the same per-chunk seeds.
    rows = list(iter_jsonl_tolerant(tmp_path / "full.jsonl"))
    with JsonlAppender(tmp_path / "part.jsonl") as a:
        a.append_many(rows[:5])
    with (tmp_path / "part.jsonl").open("a") as f:
        f.write('{"key": "p5", "compl')
    resumed, stats = generate_resumable(backend, items, s, tmp_path / "part.jsonl", chunk=4)
    assert stats["resumed"] == 4  # only the first complete chunk was reused
    assert resumed == full


def test_local_teacher(tiny_model_dir, tmp_path):
    from supercorrect.config import RunConfig
    from supercorrect.schema import Problem
    from supercorrect.teachers import make_teacher

    cfg = RunConfig.model_validate(
        {
            "name": "t",
            "teacher": {"kind": "local", "model": str(tiny_model_dir), "max_tokens": 8},
            "data": {"train": {"kind": "synthetic", "n": 2}},
        }
    )
    teacher = make_teacher(cfg, tmp_path)
    p = Problem(id="a", question="What is 2+2?", solution="2+2=4", answer="4", source="synthetic")
    outs = teacher.templates([p, p])
    # A random model may say nothing: then the item fails with a reason instead of an empty template.
    assert len(outs) == 2
    assert all((o.text is not None or o.error.startswith("empty")) and o.completion_tokens <= 8 for o in outs)
    assert teacher.describe()["name"].startswith("local:")
    assert teacher.usage()["completion_tokens"] > 0
