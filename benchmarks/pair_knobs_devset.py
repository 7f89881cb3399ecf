"""What the pair knobs change on real solutions: the labelled dev set (tests/data/locate_dev.jsonl, 247 solutions
of the embedded student) through the rule-based teacher with `correct.missing_step` own_k and last_step, and how
many arithmetic errors get a `step_fix` (the student's step with the right result: `pairs.chosen: student_form`).

    PYTHONPATH=src python benchmarks/pair_knobs_devset.py   # from the repository root; needs ../shared/data
"""

from __future__ import annotations

from collections import Counter

from supercorrect.locate_bench import load_items, load_references, match_reference
from supercorrect.pair_builder import build_pair
from supercorrect.teachers.base import CorrectionRequest
from supercorrect.teachers.reference import ReferenceTeacher, student_answer
from supercorrect.xmlformat import parse, render_solution

REFERENCES = ["../shared/data/gsm8k/test.jsonl", "synthetic:test:40:0:2:3", "synthetic:test:32:1:1:1",
              "synthetic:test:32:2:1:1", "synthetic:test:32:4:1:1", "synthetic:test:32:3:1:1"]  # fmt: skip


def main() -> None:
    items = load_items("tests/data/locate_dev.jsonl")
    refs = match_reference(items, load_references(REFERENCES))
    counts: Counter = Counter()
    for mode in ("own_k", "last_step"):
        teacher = ReferenceTeacher(mark_text=False, missing_step=mode)
        for it in items:
            if it.id not in refs:
                continue
            said = student_answer("\n\n".join(it.steps), list(it.steps))  # the answer as locate-bench reads it
            raw = render_solution(it.steps, said or "")  # the steps as HT blocks, that answer in <Answer>
            req = CorrectionRequest(refs[it.id].model_copy(update={"question": it.problem}), raw, list(it.steps))
            verdict, _ = teacher.locate(req)
            out = teacher.correction(req)
            k = parse(out.text).first_error
            counts[f"{mode:9s} {out.reason:22s} {'k = n+1' if k and k > len(it.steps) else 'k <= n'}"] += 1
            if mode == "own_k" and out.reason == "arithmetic_error":
                fix = "step_fix" if out.step_fix else ("right value off route" if verdict.fix is None else "no fix")
                counts[f"arithmetic_error: {fix}"] += 1
                if out.step_fix:
                    _, why = build_pair("x", "", raw, out.text, "", chosen_form="student_form", step_fix=out.step_fix)
                    counts[f"arithmetic_error: student_form pair {why or 'built'}"] += 1
    for key, n in sorted(counts.items()):
        print(f"{n:4d}  {key}")


if __name__ == "__main__":
    main()
