"""How a stage's teacher requests ended, and the two rules that stop a stage for them.

Every teacher request of a stage (one per item: a template, a correction) ends answered (text, perhaps cut at
`max_tokens`) or failed with a kind and a reason (`rate_limit`, `server_error`, `timeout`, `connection`,
`bad_response`, `client_error`, `empty`, `budget`; see `teachers.openai_chat`). The stage records them in its
outputs and its manifest (`counts.teacher`), and only then applies the rules, so its partial outputs and the
teacher cache are on disk and a re-run sends only what is missing:

- a spend cap (`teacher.max_spend_usd`, `teacher.max_total_tokens`) kept a request from being sent: stop;
- fewer than `teacher.min_success_rate` of the requests were answered: stop.

Both stops are a one-line `UserError` (exit code 2) that says how to continue. An item the teacher declines
without asking anything (the rule-based reference teacher's `not_checkable`) is no failed request: it is
counted apart (`declined_by_kind`) and left out of the success rate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import UserError
from ..teachers import TeacherOutput
from ..teachers.openai_chat import FAILURE_KINDS

DECLINED_KINDS = ("not_checkable",)  # the reference teacher cannot work on the problem: nothing was asked


def failure_kind(error: str | None) -> str:
    """The kind of a failed item's error: `"timeout: ..."` -> `timeout`, `"not_checkable: ..."` ->
    `not_checkable`; `other` (a failed request) when it names no known kind."""
    head = (error or "").split(":", 1)[0].strip()
    return head if head in FAILURE_KINDS or head in DECLINED_KINDS else "other"


@dataclass
class TeacherTally:
    requests: int = 0
    answered: int = 0
    truncated: int = 0  # answered, but cut at max_tokens
    failed_by_kind: dict[str, int] = field(default_factory=dict)  # requests that failed (FAILURE_KINDS)
    declined_by_kind: dict[str, int] = field(default_factory=dict)  # items the teacher did not ask about
    budget_reason: str | None = None  # the first `budget` failure's reason, when a cap stopped a request

    @property
    def failed(self) -> int:
        return sum(self.failed_by_kind.values())

    @property
    def success_rate(self) -> float:
        """Answered / (answered + failed requests); 1.0 when nothing was asked."""
        asked = self.answered + self.failed
        return self.answered / asked if asked else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "truncated": self.truncated,
            "failed": self.failed,
            "failed_by_kind": dict(sorted(self.failed_by_kind.items())),
            "declined_by_kind": dict(sorted(self.declined_by_kind.items())),
            "success_rate": round(self.success_rate, 4),
        }


def tally(outputs: list[TeacherOutput]) -> TeacherTally:
    t = TeacherTally(requests=len(outputs))
    failed: Counter[str] = Counter()
    declined: Counter[str] = Counter()
    for out in outputs:
        if out.text is not None:
            t.answered += 1
            t.truncated += (out.error or "").startswith("length")
            continue
        kind = failure_kind(out.error)
        (declined if kind in DECLINED_KINDS else failed)[kind] += 1
        if kind == "budget" and t.budget_reason is None:
            t.budget_reason = (out.error or "").split(":", 1)[-1].strip().removeprefix("not sent: ")
    t.failed_by_kind, t.declined_by_kind = dict(failed), dict(declined)
    return t


def enforce(cfg: RunConfig, stage: str, t: TeacherTally, details: Path) -> None:
    """Stop the stage (UserError, exit 2) when a spend cap was hit or too few requests were answered.

    Call it after the stage has written its outputs: `details` is the file listing the failed items."""
    if t.failed_by_kind.get("budget"):
        raises = []  # e.g. "--set teacher.max_spend_usd=8"
        if cfg.teacher.max_spend_usd is not None:
            raises.append(f"--set teacher.max_spend_usd={2 * cfg.teacher.max_spend_usd:g}")
        if cfg.teacher.max_total_tokens is not None:
            raises.append(f"--set teacher.max_total_tokens={2 * cfg.teacher.max_total_tokens}")
        raise UserError(
            f"{stage}: teacher spend cap reached: {t.budget_reason}; {t.answered}/{t.requests} requests "
            f"answered and cached, {t.failed_by_kind['budget']} not sent. To continue, raise the cap in the "
            f"config or with {' '.join(raises) or '--set teacher.max_spend_usd=...'} and run the same command "
            f"again: answered requests are not sent again"
        )
    if t.success_rate < cfg.teacher.min_success_rate:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(t.failed_by_kind.items(), key=lambda kv: -kv[1]))
        raise UserError(
            f"{stage}: only {t.answered}/{t.answered + t.failed} teacher requests answered ({t.success_rate:.1%} "
            f"< teacher.min_success_rate {cfg.teacher.min_success_rate:.0%}); {t.failed} failed ({kinds}), "
            f"listed in {details}. Answered requests are cached: fix the cause and run the same command again "
            f"to send only the failed ones"
        )
