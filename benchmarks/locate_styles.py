"""False alarms of the reference locator on correct solutions written in the styles real models use.

Why: the hidden external set of real model solutions cannot be used here, and hand-written sets are small. Every
GSM8K test reference solution is a correct solution; rewritten automatically in the styles that made the old
locator fire on real solutions, each variant must be judged correct. The styles:
  plain      annotations removed, one step per line, "The answer is X."
  latex      * and / as \\times and \\div inside \\( \\), a LaTeX restatement of each value
             (\\[ \\text{Result} = \\$v \\]), and the answer as \\[ \\boxed{X} \\]
  markdown   "## Step i: ..." headers, bold answer line "**Final answer:** X"
  algebra    each result named by a letter first ("Let a = 16 - 3 - 4 = 9") and an algebra line
             ("so 2a = 18 - 0a") that is not arithmetic
  reordered  operands of each * and + swapped where the step is "a op b" (a route written in another order)
Output: per style, the share of the solutions the locator calls correct (accuracy on correct solutions), with a
95% Wilson interval, for the locator in this checkout.

    python benchmarks/locate_styles.py --data ../shared/data/gsm8k/test.jsonl [--limit 500]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections import Counter

from supercorrect.data import DataSpec, load_problems
from supercorrect.teachers.reference import checkable, locate_first_error

try:
    from supercorrect.teachers.reference import student_answer
except ImportError:  # the locator before issue 13 (to measure "before"): its fallback, the last number

    def student_answer(raw: str, steps: list[str]) -> str | None:
        nums = re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+", raw or "\n".join(steps))
        return nums[-1] if nums else None

ANNOT = re.compile(r"<<[^<>]*>>")
SIMPLE = re.compile(r"^(\s*\$?)(\d+(?:\.\d+)?)(\s*)([*+])(\s*\$?)(\d+(?:\.\d+)?)(\s*=)")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def lines(problem) -> list[str]:
    body = problem.solution.split("####")[0]
    return [ANNOT.sub("", line).strip() for line in body.splitlines() if line.strip()]


def variants(problem) -> dict[str, list[str]]:
    base = lines(problem)
    ans = problem.answer
    values = [s.value for s in problem.steps]
    latex = []
    for text, v in zip(base, values + [None] * len(base), strict=False):
        t = text.replace("*", " \\times ").replace(" / ", " \\div ")
        latex.append(f"\\( {t} \\)" + (f"\n\\[ \\text{{Result}} = \\${v} \\]" if v else ""))
    algebra = []
    for n, text in enumerate(base):
        algebra.append(f"Let {'abcdefghijklmnop'[n % 16]} be this quantity: {text}")
    algebra.append(f"So 2a = {ans} - 0a + a, which we do not need.")
    reordered = []
    for text in base:
        # "16 * 2 = 32" -> "2 * 16 = 32" at the start of an equation inside the text
        out = []
        for part in re.split(r"(?<=[a-z,:]) ", text):
            m = SIMPLE.match(part)
            out.append(SIMPLE.sub(r"\g<1>\g<6>\g<3>\g<4>\g<5>\g<2>\g<7>", part) if m else part)
        reordered.append(" ".join(out))
    return {
        "plain": base + [f"The answer is {ans}."],
        "latex": latex + [f"\\[ \\boxed{{{ans}}} \\]"],
        "markdown": [f"## Step {i}: {t}" for i, t in enumerate(base, 1)] + [f"**Final answer:** {ans}"],
        "algebra": algebra + [f"The answer is {ans}."],
        "reordered": reordered + [f"#### {ans}"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/gsm8k/test.jsonl")
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    problems = [p for p in load_problems(DataSpec(kind="gsm8k", path=args.data)) if checkable(p)][: args.limit]
    ok: Counter[str] = Counter()
    n: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {}
    t0 = time.perf_counter()
    for p in problems:
        for style, steps in variants(p).items():
            v = locate_first_error(p, steps, student_answer("", steps))
            n[style] += 1
            ok[style] += v.index is None
            reasons.setdefault(style, Counter())[getattr(v, "reason", v.kind or "no_error")] += 1
    print(f"{len(problems)} checkable GSM8K reference solutions, {time.perf_counter() - t0:.1f} s")
    for style in n:
        lo, hi = wilson(ok[style], n[style])
        top = ", ".join(f"{r} {c}" for r, c in reasons[style].most_common(3) if r != "no_error")
        print(f"{style:10s} judged correct {ok[style]}/{n[style]} = {100 * ok[style] / n[style]:.1f}% "
              f"(95% CI {100 * lo:.1f}-{100 * hi:.1f}); false alarms by reason: {top or '-'}")  # fmt: skip
    total_ok, total = sum(ok.values()), sum(n.values())
    print(f"all styles: judged correct {100 * total_ok / total:.1f}% of {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
