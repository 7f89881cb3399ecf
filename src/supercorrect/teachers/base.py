"""The teacher interface: every teacher (API LLM, local model, rule-based reference) does the method's two jobs.

1. `templates`: turn each problem's reference solution into a hierarchical solution (XML, see `xmlformat`).
2. `corrections`: given a student's wrong solution, find its first wrong step k and write a correction trace
   (steps before k with <Evaluate>, step k with <Cause> and <Correction>, then <Answer>).

Both take a batch and return one `TeacherOutput` per item, in order. A failed item has `text=None` and an
`error` saying why; a teacher never raises for one bad item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

from ..schema import Problem

CorrectionMode = Literal["single_pass", "stepwise"]


@dataclass
class TeacherOutput:
    text: str | None  # None when the item failed
    error: str | None = None  # failure kind and reason, e.g. "rate_limit: 429 after 6 retries"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False  # answered from the on-disk cache: no request was sent
    reason: str | None = None  # why the teacher located step k (rule-based teacher: a code of reference.REASONS)


@dataclass
class CorrectionRequest:
    problem: Problem
    student_solution: str  # the student's whole raw output (untrusted text)
    steps: list[str] = field(default_factory=list)  # the student's step bodies, in order (from xmlformat.parse)


class Teacher(ABC):
    name: str = "teacher"
    rule_based: bool = False  # True for the reference teacher: it says so in every manifest and report

    @abstractmethod
    def templates(self, problems: list[Problem]) -> list[TeacherOutput]: ...

    @abstractmethod
    def corrections(
        self, requests: list[CorrectionRequest], *, mode: CorrectionMode = "single_pass"
    ) -> list[TeacherOutput]: ...

    def usage(self) -> dict:
        """Requests sent, cache hits, tokens, estimated cost (never secrets)."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name, "rule_based": self.rule_based}
