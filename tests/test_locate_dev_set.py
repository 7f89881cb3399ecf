"""The hand-labelled first-error dev set (tests/data/locate_dev.jsonl) keeps its format and its size.

Why: locate-bench and the reference locator are scored on this file, so a broken row, a label outside its
solution, a duplicated id, or a set that shrank below the sizes issue 13 asks for (100 wrong, 50 right, two
generators, two sources) must fail here and not show up later as a strange F1.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

DEV = Path(__file__).parent / "data" / "locate_dev.jsonl"
LABELS = Path(__file__).resolve().parents[1] / "benchmarks" / "locate_dev_labels.jsonl"
FIELDS = {"id", "problem", "steps", "label", "final_answer_correct", "generator", "source", "note"}
SOURCE = re.compile(r"^(gsm8k-test:\d+|synthetic-test:synthetic-test-\d+-\d+)$")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines()]


def test_every_row_has_the_fields_and_types(rows):
    for r in rows:
        assert set(r) == FIELDS, r.get("id")
        assert isinstance(r["id"], str) and r["id"]
        assert isinstance(r["problem"], str) and r["problem"].strip()
        assert isinstance(r["steps"], list) and 1 <= len(r["steps"]) <= 12, r["id"]
        assert all(isinstance(s, str) and s.strip() for s in r["steps"]), r["id"]
        assert type(r["label"]) is int
        assert type(r["final_answer_correct"]) is bool
        assert SOURCE.match(r["source"]), r["source"]
        assert r["generator"].startswith("smollm2-135m-instruct/")
        assert isinstance(r["note"], str) and r["note"].strip(), r["id"]


def test_labels_lie_inside_their_solution(rows):
    for r in rows:
        assert -1 <= r["label"] < len(r["steps"]), r["id"]


def test_ids_are_unique(rows):
    dup = [k for k, n in Counter(r["id"] for r in rows).items() if n > 1]
    assert not dup


MIN_WRONG, MIN_RIGHT = 100, 50  # issue 13's sizes


def test_sizes_and_coverage(rows):
    wrong = [r for r in rows if r["label"] >= 0]
    right = [r for r in rows if r["label"] == -1]
    assert len(wrong) >= MIN_WRONG
    assert right, "no all-correct solution at all"
    generators = Counter(r["generator"] for r in rows)
    assert len(generators) >= 2, generators
    kinds = Counter(r["source"].split(":")[0] for r in rows)
    assert set(kinds) == {"gsm8k-test", "synthetic-test"}, kinds
    assert {r["source"].split(":")[0] for r in wrong} == {"gsm8k-test", "synthetic-test"}


def test_enough_all_correct_solutions(rows):
    """Issue 13 asks for 50 all-correct solutions (the first version had 9; see docs/labelling_rules.md)."""
    assert sum(r["label"] == -1 for r in rows) >= MIN_RIGHT


def test_no_solution_is_in_the_set_twice(rows):
    """Greedy decoding writes the same text for a problem two seeds share; a copy would be scored twice."""
    dup = [k for k, n in Counter((r["problem"], tuple(r["steps"])) for r in rows).items() if n > 1]
    assert not dup, dup[:3]


def test_an_all_correct_solution_has_a_correct_final_answer(rows):
    """Rule 13 of docs/labelling_rules.md: if every step is right the answer is right."""
    bad = [r["id"] for r in rows if r["label"] == -1 and not r["final_answer_correct"]]
    assert not bad


def test_fixture_is_the_labels_file_joined_with_candidates(rows):
    """Every label in the fixture comes from the hand-written labels file (no label edited in one place only)."""
    labels = {lab["id"]: lab for lab in map(json.loads, LABELS.read_text(encoding="utf-8").splitlines())}
    assert set(labels) == {r["id"] for r in rows}
    for r in rows:
        assert (labels[r["id"]]["label"], labels[r["id"]]["note"]) == (r["label"], r["note"]), r["id"]
