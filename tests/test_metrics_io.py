"""Metrics (pass@k, maj@k, stability) and the atomic / resumable file helpers."""

from __future__ import annotations

import json
from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supercorrect.errors import UserError
from supercorrect.io import JsonlAppender, iter_jsonl_tolerant, read_jsonl, run_lock, write_jsonl
from supercorrect.metrics import majority_correct, pass_at_k, summarize


@given(st.integers(1, 30).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_combinatorics(nck):
    n, c, k = nck
    # probability that a random k-subset of n samples contains at least one of the c correct ones
    expected = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected)
    assert 0.0 <= pass_at_k(n, c, k) <= 1.0


def test_pass_at_k_edges():
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_majority():
    assert majority_correct([("3", True), ("4", False), ("3", True)])
    assert not majority_correct([("3", True), ("4", False), ("4", False)])
    assert not majority_correct([(None, False), (None, False)])
    assert majority_correct([("3", True), ("4", False)])  # tie: first seen wins


def test_summarize_greedy_sampled_breakdown():
    rows = []
    for pid, level, ok in (("a", "1", True), ("b", "2", False)):
        rows.append({"id": pid, "greedy": True, "sample": 0, "correct": ok, "reason": "correct" if ok else "wrong",
                     "predicted": "1", "level": level, "subject": None, "source": "s"})
        for i in range(4):
            rows.append({"id": pid, "greedy": False, "sample": i, "correct": ok and i < 2, "reason": "x",
                         "predicted": str(i), "level": level, "subject": None, "source": "s"})
    s = summarize(rows, ks=(1, 2, 4))
    assert s["greedy_accuracy"] == 0.5
    assert s["by_level"] == {"1": {"n": 1, "accuracy": 1.0}, "2": {"n": 1, "accuracy": 0.0}}
    assert s["sampled_accuracy"] == pytest.approx(2 / 8)
    assert s["pass_at_k"]["4"] == pytest.approx(0.5)
    assert s["pass_at_k"]["1"] == pytest.approx(0.25)
    assert s["stability"]["round_accuracies"] == [0.5, 0.5, 0.0, 0.0]


def test_read_jsonl_errors_and_skip(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\nnot json\n[1]\n{"a": 2}\n')
    with pytest.raises(UserError, match=r"x.jsonl:2: malformed JSONL row"):
        read_jsonl(p)
    bad: list[int] = []
    assert read_jsonl(p, skip_bad=True, bad=bad) == [{"a": 1}, {"a": 2}]
    assert bad == [2, 3]
    with pytest.raises(UserError, match="file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_appender_survives_torn_line(tmp_path):
    p = tmp_path / "shard.jsonl"
    with JsonlAppender(p) as a:
        a.append({"k": 1})
    with p.open("a") as f:
        f.write('{"k": 2, "tor')  # a kill in the middle of a write
    assert [r["k"] for r in iter_jsonl_tolerant(p)] == [1]
    with JsonlAppender(p) as a:
        a.append_many([{"k": 3}, {"k": 4}])
    assert [json.loads(line)["k"] for line in p.read_text().splitlines()] == [1, 3, 4]


def test_atomic_write_leaves_no_temp(tmp_path):
    write_jsonl(tmp_path / "o.jsonl", [{"x": i} for i in range(3)])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["o.jsonl"]


def test_run_lock_is_exclusive(tmp_path):
    import multiprocessing as mp

    lock = run_lock(tmp_path / "run")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_try_lock, args=(str(tmp_path / "run"), q))
    proc.start()
    # generous waits: a spawned interpreter can take long to start on a loaded machine; they only guard hangs
    assert "another supercorrect process is using this run folder" in q.get(timeout=300)
    proc.join(300)
    lock.release()


def _try_lock(path, q):
    try:
        run_lock(path)
        q.put("acquired")
    except UserError as e:
        q.put(str(e))
