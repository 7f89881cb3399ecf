"""Check the rule-based grader against reference solutions: GSM8K test and MATH-500.

Usage: python benchmarks/grader_check.py [DATA_DIR]   (default: $SUPERCORRECT_DATA or ../shared/data)
Prints each dataset's verified rate and failures, then wall time and peak RSS.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Literal

from supercorrect.grading import Grader, check_reference_answers

DATASETS: tuple[tuple[Literal["gsm8k", "math500"], str], ...] = (
    ("gsm8k", "gsm8k/test.jsonl"),
    ("math500", "math500/test.jsonl"),
)


def _peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str]) -> int:
    default = (
        os.environ.get("SUPERCORRECT_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    data = Path(argv[1] if len(argv) > 1 else default)
    start = time.perf_counter()
    status = 0
    with Grader() as grader:
        for name, relative in DATASETS:
            path = data / relative
            if not path.is_file():
                print(f"{name}: {path} not found, skipped")
                status = 1
                continue
            t0 = time.perf_counter()
            report = check_reference_answers(name, path, grader=grader)
            print(
                f"{name}: {report['verified']}/{report['rows']} verified, rate {report['rate']:.4f} "
                f"({time.perf_counter() - t0:.1f} s)"
            )
            for failure in report["failures"]:
                print(
                    f"  failure id={failure['id']!r} extracted={failure['extracted']!r} gold={failure['gold']!r}"
                )
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    print(
        f"peak RSS: main {_peak_rss_mib(resource.RUSAGE_SELF):.0f} MiB, "
        f"largest worker {_peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB"
    )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
