"""ELAD's explanation-guided sample selection (EGSS): the student's uncertainty on a problem, from its own samples.

- Inter-path uncertainty: the entropy of the final answers of k sampled solutions, H = -sum_a p(a) log p(a) with
  p(a) the share of samples answering a (a missing answer is its own value), divided by log k so that it lies in
  [0, 1] (1: k different answers; 0: all agree).
- Intra-path uncertainty: for a sampled path with m steps, remove step i, let the student finish from the other
  steps, and compare the new answer with the path's own. Consistency c = (1/m) sum_i 1[answer without step i ==
  answer of the path]; the uncertainty is 1 - c, averaged over the ablated paths. We select the *high* end (answers
  that change when one step is dropped): such a path rests on steps the student cannot reconstruct from the rest
  of its own reasoning, which is where a teacher's revision has something to teach (docs/recipes.md, ELAD).
- The EGSS score is the sum of both (each in [0, 1]); the most uncertain problems are selected up to the budget.

Answers are compared after canonicalisation (numbers by value), not by the grader: this is agreement between the
student's own answers, with no reference involved.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from .arith import format_number, parse_number
from .grading import extract_answer

NO_ANSWER = "<none>"


def canonical_answer(text: str) -> str:
    """The final answer of a model output in a comparable form: a number by value, anything else trimmed."""
    found = extract_answer(text).answer
    if found is None or not found.strip():
        return NO_ANSWER
    value = parse_number(found.replace("\\$", "").replace("$", "").strip().rstrip("."))
    return format_number(value) if value is not None else " ".join(found.split()).lower()


def answer_entropy(answers: Sequence[str], normalize: bool = True) -> float:
    """Entropy (nats) of the empirical answer distribution; with `normalize`, divided by log(len(answers))."""
    n = len(answers)
    if n <= 1:
        return 0.0
    h = -sum((c / n) * math.log(c / n) for c in Counter(answers).values())
    h = max(h, 0.0)  # -0.0 for a single answer
    return h / math.log(n) if normalize else h


def intra_uncertainty(path_answer: str, ablated_answers: Sequence[str]) -> float | None:
    """1 - share of single-step ablations whose answer equals the path's answer; None for a path without steps."""
    if not ablated_answers:
        return None
    same = sum(1 for a in ablated_answers if a == path_answer)
    return 1.0 - same / len(ablated_answers)


def mean_or_none(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def egss_score(inter: float, intra: float | None) -> float:
    """The selection score: inter + intra (a problem whose paths have no steps gets intra 0)."""
    return inter + (intra or 0.0)


def budget_count(pool: int, share: float | None, count: int | None) -> int:
    """How many problems the teacher may annotate: `count` if given, else round(share * pool); within [0, pool]."""
    n = count if count is not None else round((share or 0.0) * pool)
    return max(0, min(pool, n))


def select_top(scores: dict[str, float], n: int, seed: int = 0) -> list[str]:
    """The n ids with the highest score; ties broken by a seeded random order (not by id)."""
    ids = sorted(scores)
    rng = random.Random(seed)
    tiebreak = {i: rng.random() for i in ids}
    return sorted(ids, key=lambda i: (-scores[i], tiebreak[i]))[:n]


def select_random(ids: Sequence[str], n: int, seed: int = 0) -> list[str]:
    pool = sorted(ids)
    random.Random(seed).shuffle(pool)
    return pool[:n]


def equal_compute_count(base: int, extra_student_tokens: float, teacher_tokens_per_problem: float,
                        teacher_token_weight: float, pool: int) -> int:  # fmt: skip
    """A cheaper selection's budget at the same total compute: `base` problems plus as many more as the student
    tokens it does not spend would buy from the teacher (one teacher token = `teacher_token_weight` student
    tokens), at most the pool."""
    unit = teacher_tokens_per_problem * teacher_token_weight
    more = int(extra_student_tokens // unit) if unit > 0 else pool
    return min(pool, base + more)
