"""Accuracy metrics over graded samples: greedy accuracy, maj@k, the unbiased pass@k estimator, breakdowns, and
error location in the self-correction pass."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from math import comb
from typing import Any

from .stats import constant_guess


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for n samples of which c are correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(answers: list[tuple[str | None, bool]]) -> bool:
    """maj@k for one problem: is the most frequent extracted answer a correct one? Ties go to the first seen.
    Answers are compared after whitespace normalisation; samples with no answer do not vote."""
    votes = Counter()
    first: dict[str, int] = {}
    correct: dict[str, bool] = {}
    for i, (a, ok) in enumerate(answers):
        if a is None:
            continue
        key = " ".join(a.split())
        votes[key] += 1
        first.setdefault(key, i)
        correct[key] = correct.get(key, False) or ok
    if not votes:
        return False
    best = max(votes, key=lambda a: (votes[a], -first[a]))
    return correct[best]


def error_location(rows: Iterable[dict]) -> tuple[dict[Any, bool], dict[Any, bool], Any]:
    """Error location per problem id from self-correction rows (`selfcorrect.jsonl`), on the wrong solutions whose
    first error the teacher located: whether the model's trace named the teacher's step; whether the chance
    baseline, always naming the step where the teacher most often found the first error (`stats.constant_guess`),
    would have; and that step (None when the teacher located none). One definition for the eval stage's summary
    and `compare`: a model that flags step 1 on every solution scores the share of step-1 errors without
    locating anything, so its rate means something only beside the baseline's."""
    judged = [r for r in rows if not r["before"] and r.get("teacher_step") is not None]
    if not judged:
        return {}, {}, None
    step, _ = constant_guess([r["teacher_step"] for r in judged])
    return ({r["id"]: r.get("model_step") == r["teacher_step"] for r in judged},
            {r["id"]: r["teacher_step"] == step for r in judged}, step)  # fmt: skip


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def summarize(rows: list[dict], ks: Iterable[int] = (1,)) -> dict:
    """rows: one per sample with keys id, sample (index), correct, predicted, level, subject, greedy (bool)."""
    greedy = [r for r in rows if r.get("greedy")]
    sampled: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if not r.get("greedy"):
            sampled[r["id"]].append(r)
    out: dict = {"problems": len({r["id"] for r in rows})}
    if greedy:
        out["greedy_accuracy"] = mean(r["correct"] for r in greedy)
        out["reasons"] = dict(Counter(r["reason"] for r in greedy))
        for field in ("level", "subject", "source"):
            groups: dict[str, list[bool]] = defaultdict(list)
            for r in greedy:
                if r.get(field) is not None:
                    groups[str(r[field])].append(r["correct"])
            if len(groups) > 1:
                out[f"by_{field}"] = {g: {"n": len(v), "accuracy": mean(v)} for g, v in sorted(groups.items())}
    if sampled:
        n = min(len(v) for v in sampled.values())
        out["samples_per_problem"] = n
        out["sampled_accuracy"] = mean(r["correct"] for v in sampled.values() for r in v)
        out["pass_at_k"] = {
            str(k): mean(pass_at_k(len(v), sum(r["correct"] for r in v), k) for v in sampled.values())
            for k in sorted(set(ks) | {1, n})
            if k <= n
        }
        out[f"maj_at_{n}"] = mean(
            majority_correct([(r["predicted"], r["correct"]) for r in v]) for v in sampled.values()
        )
        # Stability: accuracy of each sampling round (sample index) across problems, and its spread.
        rounds: dict[int, list[bool]] = defaultdict(list)
        for v in sampled.values():
            for r in v:
                rounds[r["sample"]].append(r["correct"])
        accs = [mean(v) for _, v in sorted(rounds.items())]
        mu = mean(accs)
        out["stability"] = {
            "round_accuracies": accs,
            "mean": mu,
            "variance": mean((a - mu) ** 2 for a in accs),
        }
    return out
