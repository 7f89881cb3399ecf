"""Seconds the text parsers take on hostile model output: the speed side of the unit tests' linear-time checks.

The unit tests (tests/test_arith.py, test_grading.py, test_xmlformat.py, test_pair_builder.py,
test_locator_real.py) prove linear time by counting steps (tests/workcount.py), never with a clock, so they
hold on a loaded CI machine. What a count cannot see (time inside one regex call, the constant factor) is
measured here, on the same input families (imported from those tests, so there is one home for them), each at
the size the old timed tests used ("full") and at a tenth of it, in the same run:

    growth = seconds(full) / seconds(full / 10)      about 10 for linear work, about 100 for quadratic
    hostile / benign = seconds(full) / seconds(an ordinary solution text of the same length)

Best of --repeats for each figure; the process's peak RSS at the end. The last line is the headline: the
largest growth and the slowest full-size input.

    python benchmarks/parser_speed.py [--repeats 3] [--only arith,grading]   (it puts tests/ on sys.path)
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_arith  # noqa: E402
import test_grading  # noqa: E402
import test_locator_real  # noqa: E402
import test_pair_builder  # noqa: E402
import test_xmlformat  # noqa: E402

from supercorrect import xmlformat  # noqa: E402
from supercorrect.arith import find_equations, numbers_in  # noqa: E402
from supercorrect.grading import extract_answer, extract_boxed  # noqa: E402
from supercorrect.pair_builder import build_pair  # noqa: E402
from supercorrect.teachers.reference import locate_first_error, student_answer  # noqa: E402

BENIGN_STEP = "She sold 48 / 2 = 24 clips in May, so 48 + 24 = 72 clips in all.\n"


def benign_text(length: int) -> str:
    """An ordinary step-by-step solution, repeated to `length` characters."""
    block = test_xmlformat.GOOD + "\n" + BENIGN_STEP
    return (block * (length // len(block) + 1))[:length]


def arith_fn(text: str) -> None:
    find_equations(text)
    numbers_in(text)


def xml_fn(text: str) -> None:
    xmlformat.parse(text)
    xmlformat.prefix_before_step(text, 2)


def pairs_fn(flood: str) -> None:
    trace = "<Step2>x<Cause>c</Cause><Correction>d</Correction></Step2>"
    build_pair("p", test_pair_builder.CHAT_PREFIX, flood, trace, "mine")
    build_pair("p", test_pair_builder.CHAT_PREFIX, "<Step1>a</Step1><Step2>b</Step2>", flood, flood)
    xmlformat.prefix_before_step(flood, 4000)


def locate_fn(steps: list[str]) -> None:
    locate_first_error(test_locator_real.EGGS, steps, student_answer("", steps))


# name -> (input families {name: make(k)}, k at full size, the function, benign input of a given length)
SUITES: dict[str, tuple[dict[str, Callable[[int], Any]], int, Callable[[Any], None], Callable[[int], Any]]] = {
    "arith": (test_arith.ADVERSARIAL_TEXTS, 100_000, arith_fn, benign_text),
    "grading.extract_boxed": (test_grading.BOXED_HOSTILE, 200_000, extract_boxed, benign_text),
    "grading.extract_answer": (test_grading.ANSWER_HOSTILE, 100_000, extract_answer, benign_text),
    "xmlformat": (test_xmlformat.ADVERSARIAL, 20_000, xml_fn, benign_text),
    "pair_builder": (test_pair_builder.FLOODS, 20_000, pairs_fn, benign_text),
    "locator": (test_locator_real.HOSTILE_STEPS, 100, locate_fn,
                lambda n: [BENIGN_STEP] * max(1, n // len(BENIGN_STEP))),
}  # fmt: skip


def size(x: Any) -> int:
    return sum(map(len, x)) if isinstance(x, list) else len(x)


def best_of(repeats: int, fn: Callable[[Any], None], arg: Any) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated suites: " + ", ".join(SUITES))
    args = parser.parse_args()
    suites = args.only.split(",") if args.only else list(SUITES)
    worst_growth, slowest = ("", 0.0), ("", 0.0)
    print(f"{'suite / input':52} {'chars':>9} {'full s':>8} {'1/10 s':>8} {'growth':>7} {'vs benign':>9}")
    for suite in suites:
        families, k, fn, benign = SUITES[suite]
        for name, make in families.items():
            full, tenth = make(k), make(k // 10)
            t_full, t_tenth = best_of(args.repeats, fn, full), best_of(args.repeats, fn, tenth)
            t_benign = best_of(args.repeats, fn, benign(size(full)))
            growth = t_full / max(t_tenth, 1e-9)
            label = f"{suite} / {name}"
            print(f"{label:52} {size(full):9d} {t_full:8.4f} {t_tenth:8.4f} {growth:6.1f}x "
                  f"{t_full / max(t_benign, 1e-9):8.1f}x")  # fmt: skip
            if growth > worst_growth[1]:
                worst_growth = (label, growth)
            if t_full > slowest[1]:
                slowest = (label, t_full)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss_mib:.0f} MiB")
    print(f"largest growth for 10x the input: {worst_growth[1]:.1f}x ({worst_growth[0]}); "
          f"slowest full-size input: {slowest[1]:.3f} s ({slowest[0]})")  # fmt: skip


if __name__ == "__main__":
    main()
