"""The LLM teacher: the paper's prompts sent through any chat backend (OpenAI-compatible API or a local model).

- `templates`: the teacher prompt `template_extraction` turns each reference solution into a hierarchical
  solution (the model's XML, unparsed: callers parse it and grade its <Answer>).
- `corrections(mode="single_pass")`: the grounded correction prompt (problem, reference solution, the student's
  steps as "Step i: body" lines) in one call per request; the text is the model's correction trace.
- `corrections(mode="stepwise")`: ELAD's CLAER. Round r asks `step_verify` about step r of every request not yet
  decided (one batched call per round); the first reply whose first word is "No" fixes the first wrong step k,
  and its <Cause>/<Correction> become step k's cause and correction. The trace is then rendered with
  `xmlformat.render_correction` (steps before k marked correct) and NO further call: its <Answer> is the
  problem's reference answer. So a stepwise trace's final answer comes from the reference, not from the
  teacher, and checking it against the reference proves nothing; what the teacher contributes is k, the
  cause and the correction. If every step is judged correct, k is the last step (the final answer is wrong)
  and the cause and correction say so. Requests with no parsed steps fall back to single_pass.
- `inspect`: the optional inspector. Traces that fail a caller-given check are sent back with the `inspector`
  prompt, at most `rounds` times (paper: 3).

A failed item has `text=None` and `error`. An item whose text was truncated at max_tokens keeps its text and
has `error="length: ..."`: it is usually unusable (no <Answer>) and the caller's parse/grade step drops it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .. import prompts
from ..schema import Problem
from .base import CorrectionMode, CorrectionRequest, Teacher, TeacherOutput
from .openai_chat import ChatResult, OpenAIChat

ChatMany = Callable[[list[list[dict[str, Any]]], str], list[ChatResult]]
Check = Callable[[Problem, str | None], str | None]  # returns why a trace fails, or None when it passes

ALL_STEPS_CORRECT_CAUSE = (
    "Each step was judged correct on its own, but the final answer does not match the reference solution."
)
_FIRST_WORD = re.compile(r"[^A-Za-z]*([A-Za-z]+)")
_CAUSE = re.compile(r"<Cause>\s*(.*?)\s*(?:</Cause>|(?=<Correction\b)|\Z)", re.S | re.I)
_CORRECTION = re.compile(r"<Correction>\s*(.*?)\s*(?:</Correction>|(?=<Cause\b)|\Z)", re.S | re.I)
_TAGGED = re.compile(r"<(Cause|Correction)>.*?(?:</\1>|\Z)|</?(?:Cause|Correction)>", re.S | re.I)


_STRAY = re.compile(r"</?\s{0,3}(?:Step\s{0,2}\d{0,9}|Answer|Evaluate|Key|Generalized)\s{0,3}>", re.I)


def user(prompt: str) -> list[dict[str, Any]]:
    """A one-turn conversation."""
    return [{"role": "user", "content": prompt}]


def format_steps(steps: list[str], raw: str = "") -> str:
    """The student's steps as "Step i: body" lines, or the raw solution when no steps were parsed."""
    if not steps:
        return raw.strip() or "(empty solution)"
    return "\n".join(f"Step {i}: {body.strip()}" for i, body in enumerate(steps, 1))


def parse_step_verdict(text: str) -> tuple[str | None, str | None, str | None]:
    """(verdict, cause, correction) from a `step_verify` reply. verdict is "yes", "no" or None when the first
    word is neither; a "No" reply without tags gets its remaining text as the correction."""
    m = _FIRST_WORD.match(text)
    word = m.group(1).lower() if m else ""
    verdict = word if word in ("yes", "no") else None
    if verdict != "no":
        return verdict, None, None
    cause_m, corr_m = _CAUSE.search(text), _CORRECTION.search(text)
    cause = _clean(cause_m.group(1)) if cause_m else ""
    correction = _clean(corr_m.group(1)) if corr_m else ""
    if not correction:
        correction = _clean(_TAGGED.sub(" ", text[m.end() :] if m else text)).strip(" .,:;-")
    return verdict, cause or None, correction or None


def _clean(text: str) -> str:
    """Drop format tags a reply may echo (<Step2>, <Answer>), so they cannot confuse the rendered trace."""
    return _STRAY.sub("", text).strip()


class LLMTeacher(Teacher):
    """A teacher that is a chat model. `chat_many(conversations, desc)` returns one ChatResult each, in order."""

    rule_based = False

    def __init__(
        self,
        chat_many: ChatMany,
        *,
        name: str = "llm",
        usage: Callable[[], dict[str, Any]] | None = None,
        info: dict[str, Any] | None = None,
    ):
        self.chat_many = chat_many
        self.name = name
        self._usage = usage
        self._info = dict(info or {})

    @classmethod
    def from_openai(cls, chat: OpenAIChat, name: str | None = None) -> LLMTeacher:
        """A teacher over an OpenAI-compatible endpoint."""
        return cls(
            chat.chat_many,
            name=name or f"openai:{chat.model}",
            usage=chat.usage.to_dict,
            info=chat.describe(),
        )

    def usage(self) -> dict[str, Any]:
        return self._usage() if self._usage else {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._info, "stepwise_answer": "reference answer (see teachers.llm)"}

    # ---- the two jobs ------------------------------------------------------------------------------------

    def templates(self, problems: list[Problem]) -> list[TeacherOutput]:
        convs = [
            user(prompts.render("template_extraction", problem=p.question, solution=p.solution))
            for p in problems
        ]
        return [_output(r) for r in self._ask(convs, f"{self.name} templates")]

    def corrections(
        self, requests: list[CorrectionRequest], *, mode: CorrectionMode = "single_pass"
    ) -> list[TeacherOutput]:
        if mode == "single_pass":
            return self._single_pass(requests)
        if mode == "stepwise":
            return self._stepwise(requests)
        raise ValueError(f"unknown correction mode {mode!r}; use 'single_pass' or 'stepwise'")

    def _single_pass(self, requests: list[CorrectionRequest]) -> list[TeacherOutput]:
        convs = [
            user(
                prompts.render(
                    "correction_grounded",
                    problem=r.problem.question,
                    solution=r.problem.solution,
                    steps=format_steps(r.steps, r.student_solution),
                )
            )
            for r in requests
        ]
        return [_output(r) for r in self._ask(convs, f"{self.name} corrections")]

    def _stepwise(self, requests: list[CorrectionRequest]) -> list[TeacherOutput]:
        from ..xmlformat import render_correction

        outs: list[TeacherOutput | None] = [None] * len(requests)
        spent = [TeacherOutput(text=None, cached=True) for _ in requests]  # running token totals
        no_steps = [i for i, r in enumerate(requests) if not r.steps]
        if no_steps:
            for i, out in zip(no_steps, self._single_pass([requests[i] for i in no_steps]), strict=True):
                outs[i] = out
        active = [i for i, r in enumerate(requests) if r.steps]
        step = 0  # 0-based index of the step checked in this round
        while active:
            convs = [self._verify_prompt(requests[i], step) for i in active]
            replies = self._ask(convs, f"{self.name} verify step {step + 1}")
            still: list[int] = []
            for i, reply in zip(active, replies, strict=True):
                _add(spent[i], reply)
                req = requests[i]
                if not (reply.text and reply.text.strip()):
                    kind, _, reason = (reply.error or "empty: no text").partition(": ")
                    outs[i] = _with_tokens(spent[i], None, f"{kind}: step {step + 1}: {reason}")
                    continue
                verdict, cause, correction = parse_step_verdict(reply.text)
                if verdict == "no":
                    if not correction:
                        err = f"bad_response: step {step + 1} judged wrong but the reply gives no correction"
                        outs[i] = _with_tokens(spent[i], None, err)
                        continue
                    k = step + 1
                    cause = cause or "The teacher judged this step incorrect without giving a reason."
                elif step + 1 >= len(req.steps):
                    k, cause = len(req.steps), ALL_STEPS_CORRECT_CAUSE
                    correction = f"The correct final answer is {req.problem.answer}."
                else:
                    still.append(i)
                    continue
                text = render_correction(req.steps, k, cause, correction, req.problem.answer)
                outs[i] = _with_tokens(spent[i], text, None)
            active, step = still, step + 1
        return [o if o is not None else TeacherOutput(None, error="client_error: not run") for o in outs]

    def _verify_prompt(self, req: CorrectionRequest, step: int) -> list[dict[str, Any]]:
        previous = format_steps(req.steps[:step]) if step else "(none)"
        return user(
            prompts.render(
                "step_verify",
                problem=req.problem.question,
                solution=req.problem.solution,
                previous=previous,
                step=f"Step {step + 1}: {req.steps[step].strip()}",
            )
        )

    # ---- inspector ---------------------------------------------------------------------------------------

    def inspect(
        self,
        problems: list[Problem],
        traces: list[TeacherOutput],
        check: Check,
        *,
        rounds: int = 3,
        inspector: ChatMany | None = None,
    ) -> tuple[list[TeacherOutput], list[int]]:
        """Send traces that fail `check` back with the inspector prompt, at most `rounds` rounds.

        `check(problem, text)` returns why a trace fails (e.g. "answer 12 != reference 14") or None. The
        inspector is this teacher's backend unless `inspector` is given (the paper used a stronger model).
        Returns the final traces (a failed re-ask keeps the previous text and notes the error) and, per item,
        how many rounds it was sent back.
        """
        if len(problems) != len(traces):
            raise ValueError(f"{len(problems)} problems but {len(traces)} traces")
        ask = inspector or self.chat_many
        outs = [
            TeacherOutput(t.text, t.error, t.prompt_tokens, t.completion_tokens, t.cached) for t in traces
        ]
        used = [0] * len(outs)
        reasons = {i: check(p, o.text) for i, (p, o) in enumerate(zip(problems, outs, strict=True))}
        failing = [i for i, why in reasons.items() if why is not None]
        for rnd in range(1, rounds + 1):
            if not failing:
                break
            convs = [self._inspector_prompt(problems[i], outs[i].text, reasons[i] or "") for i in failing]
            replies = _checked(ask(convs, f"{self.name} inspector round {rnd}"), len(convs))
            for i, reply in zip(failing, replies, strict=True):
                used[i] += 1
                _add(outs[i], reply)
                if reply.text:
                    outs[i].text, outs[i].error = reply.text, _length_note(reply)
                else:
                    outs[i].error = f"inspector round {rnd}: {reply.error or 'empty: no text'}"
            for i in failing:
                reasons[i] = check(problems[i], outs[i].text)
            failing = [i for i in failing if reasons[i] is not None]
        return outs, used

    def _inspector_prompt(self, problem: Problem, trace: str | None, reason: str) -> list[dict[str, Any]]:
        return user(
            prompts.render(
                "inspector",
                reason=reason or "it does not match",
                problem=problem.question,
                answer=problem.answer,
                solution=problem.solution,
                trace=trace or "(no trace)",
            )
        )

    # ---- helpers -----------------------------------------------------------------------------------------

    def _ask(self, convs: list[list[dict[str, Any]]], desc: str) -> list[ChatResult]:
        return _checked(self.chat_many(convs, desc) if convs else [], len(convs))


def _checked(results: list[ChatResult], n: int) -> list[ChatResult]:
    if len(results) != n:
        raise RuntimeError(f"chat backend returned {len(results)} results for {n} conversations")
    return results


def _length_note(r: ChatResult) -> str | None:
    if r.finish_reason == "length":
        return r.error or "length: truncated at max_tokens"
    return None


def _output(r: ChatResult) -> TeacherOutput:
    """TeacherOutput from a chat result: empty text is a failure, truncated text is kept with a note."""
    text = r.text if r.text and r.text.strip() else None
    if text is None:
        error = r.error or "empty: no text in the completion"
    else:
        error = _length_note(r) or r.error
    return TeacherOutput(text, error, r.prompt_tokens, r.completion_tokens, r.cached)


def _add(acc: TeacherOutput, r: ChatResult) -> None:
    acc.prompt_tokens += r.prompt_tokens
    acc.completion_tokens += r.completion_tokens
    acc.cached = acc.cached and r.cached


def _with_tokens(acc: TeacherOutput, text: str | None, error: str | None) -> TeacherOutput:
    return TeacherOutput(text, error, acc.prompt_tokens, acc.completion_tokens, acc.cached)
