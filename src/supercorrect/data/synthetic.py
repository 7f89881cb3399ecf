"""The synthetic problem generator: seeded multi-step arithmetic word problems whose every step's expression and
value is known, so the rule-based reference teacher can check and correct a student step by step.

The arithmetic (which operations are feasible, operands, results) is here; the wording (scenarios, names,
pronouns) is data, in `scenarios.yaml` beside this file, like the prompts.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import yaml

from ..errors import UserError
from ..schema import Problem, RefStep
from .spec import MAX_SYNTHETIC_STEPS

SYNTHETIC_DEFAULT_N = 1000
MAX_VALUE = 10_000


@dataclass(frozen=True)
class _Scenario:
    """One surface template: an opening product step, sentences for each operation, a final question.

    Placeholders: {Name} {pron} {Pron} {poss} {Poss} {obj} {a} {b} {c} {k} {p} {v} {r}. Each op is
    (question sentence, step sentence)."""

    name: str
    intro_q: str
    intro_s: str
    ops: dict[str, tuple[str, str]]
    final_q: str
    a_range: tuple[int, int] = (2, 9)
    b_range: tuple[int, int] = (2, 15)


@dataclass(frozen=True)
class _Wording:
    scenarios: tuple[_Scenario, ...]
    names: tuple[tuple[str, str], ...]  # (first name, pronoun set)
    pronouns: dict[str, tuple[str, str, str]]  # pronoun set -> (subject, possessive, object)


@cache
def _wording() -> _Wording:
    raw = yaml.safe_load(files(__package__).joinpath("scenarios.yaml").read_text(encoding="utf-8"))
    scenarios = tuple(
        _Scenario(
            name=s["name"],
            intro_q=s["intro"]["question"],
            intro_s=s["intro"]["step"],
            ops={op: (t["question"], t["step"]) for op, t in s["ops"].items()},
            final_q=s["final"],
        )
        for s in raw["scenarios"]
    )
    names = tuple((n, g) for n, g in raw["names"])
    pronouns = {g: tuple(forms) for g, forms in raw["pronouns"].items()}
    return _Wording(scenarios, names, pronouns)  # type: ignore[arg-type]


SYNTHETIC_TEMPLATES: tuple[str, ...] = tuple(s.name for s in _wording().scenarios)
_PERCENTS = (10, 20, 25, 50, 75)


def question_split(question: str) -> str:
    """The split a synthetic question belongs to: 'train' if the first byte of its SHA-256 is even, else
    'test'. The generator drops questions of the other split, so train and test never share a question."""
    return "train" if hashlib.sha256(question.encode("utf-8")).digest()[0] % 2 == 0 else "test"


def _feasible(op: str, v: int, rng: random.Random) -> tuple[int, dict[str, int]] | None:
    """Pick operands for `op` applied to v; None when no operands keep the result a positive integer < 10000."""
    if op == "add":
        c = rng.randint(2, 40)
        return (v + c, {"c": c}) if v + c < MAX_VALUE else None
    if op == "sub":
        if v < 4:
            return None
        c = rng.randint(1, min(v - 2, 40))
        return v - c, {"c": c}
    if op == "mul":
        ks = [k for k in (2, 3, 4) if v * k < MAX_VALUE]
        if not ks or v > 300:
            return None
        k = rng.choice(ks)
        return v * k, {"k": k}
    if op == "div":
        ks = [k for k in range(2, 7) if v % k == 0 and v // k >= 2]
        if not ks:
            return None
        k = rng.choice(ks)
        return v // k, {"k": k}
    if op == "pct":
        ps = [p for p in _PERCENTS if (v * p) % 100 == 0 and v * p // 100 >= 2]
        if not ps:
            return None
        p = rng.choice(ps)
        return v * p // 100, {"p": p}
    raise ValueError(op)


def _expr(op: str, v: int, args: dict[str, int]) -> str:
    if op == "add":
        return f"{v} + {args['c']}"
    if op == "sub":
        return f"{v} - {args['c']}"
    if op == "mul":
        return f"{v} * {args['k']}"
    if op == "div":
        return f"{v} / {args['k']}"
    return f"{v} * {args['p']} / 100"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _one_problem(rng: random.Random, n_steps: int) -> tuple[str, list[RefStep], int, str]:
    wording = _wording()
    scenario = rng.choice(wording.scenarios)
    name, gender = rng.choice(wording.names)
    pron, poss, obj = wording.pronouns[gender]
    words = {"Name": name, "pron": pron, "Pron": _cap(pron), "poss": poss, "Poss": _cap(poss), "obj": obj}
    a, b = rng.randint(*scenario.a_range), rng.randint(*scenario.b_range)
    v = a * b
    sentences = [scenario.intro_q.format(**words, a=a, b=b)]
    steps = [RefStep(text=scenario.intro_s.format(**words, a=a, b=b, r=v), expr=f"{a} * {b}", value=str(v))]
    last_op = "mul"
    used = {a, b, v}  # numbers already in play: a result equal to one of them would make steps ambiguous
    for _ in range(n_steps - 1):
        ops = [op for op in scenario.ops if op != last_op] or list(scenario.ops)
        candidates = []
        for _try in range(8):
            op = rng.choice(ops)
            picked = _feasible(op, v, rng)
            if picked is not None:
                candidates.append((op, picked))
                if picked[0] not in used and not set(picked[1].values()) & {v}:
                    break
        if not candidates:  # every scenario has "add", feasible while v < MAX_VALUE - 40
            candidates.append(("add", _feasible("add", v, rng)))
        op, picked = candidates[-1]
        assert picked is not None
        r, args = picked
        used |= {r, *args.values()}
        q_tpl, s_tpl = scenario.ops[op]
        fmt = {**words, **args, "v": v, "r": r}
        sentences.append(_cap(q_tpl.format(**fmt)))
        steps.append(RefStep(text=_cap(s_tpl.format(**fmt)), expr=_expr(op, v, args), value=str(r)))
        v, last_op = r, op
    sentences.append(scenario.final_q.format(**words))
    return " ".join(sentences), steps, v, scenario.name


def generate_synthetic(
    n: int, seed: int = 0, split: str = "train", min_steps: int = 2, max_steps: int = 5
) -> list[Problem]:
    """`n` seeded multi-step arithmetic word problems (positive integers below 10000, exact divisions), every
    step's expression and value known. Deterministic across processes for the same arguments. Questions are
    unique within a split and never shared between splits (see `question_split`)."""
    if split not in ("train", "test"):
        raise UserError(f"synthetic split must be 'train' or 'test', not {split!r}")
    if not 1 <= min_steps <= max_steps <= MAX_SYNTHETIC_STEPS:
        raise UserError(f"synthetic steps must satisfy 1 <= min_steps <= max_steps <= {MAX_SYNTHETIC_STEPS}")
    rng = random.Random(f"supercorrect-synthetic:{seed}:{split}")
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise UserError(f"could not generate {n} distinct synthetic problems (got {len(problems)})")
        n_steps = rng.randint(min_steps, max_steps)
        question, steps, answer, template = _one_problem(rng, n_steps)
        if question in seen or question_split(question) != split:
            continue
        seen.add(question)
        solution = "\n".join(s.text for s in steps) + f"\nThe answer is {answer}."
        problems.append(
            Problem(
                id=f"synthetic-{split}-{seed}-{len(problems)}",
                question=question,
                solution=solution,
                answer=str(answer),
                steps=steps,
                source="synthetic",
                level=f"{len(steps)} steps",
                subject=template,
            )
        )
    return problems
