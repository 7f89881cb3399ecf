"""The grader agrees with the reference solutions of GSM8K (test) and MATH-500 (skips without the data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supercorrect.grading import check_reference_answers

MIN_RATE = 0.99


def _data_file(relative: str) -> Path:
    for root in (
        os.environ.get("SUPERCORRECT_DATA"),
        Path(__file__).resolve().parents[1].parent / "shared" / "data",
    ):
        if root and (Path(root) / relative).is_file():
            return Path(root) / relative
    pytest.skip(f"{relative} not found under $SUPERCORRECT_DATA or ../shared/data")


@pytest.mark.parametrize(
    ("dataset", "relative"), [("gsm8k", "gsm8k/test.jsonl"), ("math500", "math500/test.jsonl")]
)
def test_reference_answers_verify(dataset, relative):
    report = check_reference_answers(dataset, _data_file(relative))
    assert report["rows"] > 0
    assert report["verified"] == report["rows"] - len(report["failures"])
    assert report["rate"] >= MIN_RATE, report["failures"][:20]
