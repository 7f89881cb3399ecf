"""Parse and render SuperCorrect's XML: hierarchical solutions and correction traces.

A hierarchical solution is `<Step1>...<Key>...</Key></Step1> ... <Generalized>...</Generalized><Answer>...</Answer>`;
a correction trace has the same steps, each with `<Evaluate>` or, at the wrong step, `<Cause>` and `<Correction>`.

Model output is untrusted. `parse` is one left-to-right pass over the tags found by a single regex with bounded
quantifiers, so it runs in linear time and never raises: whatever is odd (truncation, wrong nesting, missing or
duplicate tags, text outside tags) becomes a line in `Parsed.issues` and the parser recovers what it can.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Only the tag names of the format are tags; anything else ("a < b", "<<48/2=24>>", "<br>") is plain text.
# Every quantifier is bounded, so matching costs O(1) per '<' and the scan is linear even on adversarial input.
_TAG = re.compile(
    r"<\s{0,3}(/?)\s{0,3}(step|key|evaluate|cause|correction|generalized|answer)\s{0,2}(\d{0,9})\s{0,3}>",
    re.IGNORECASE,
)
_SUB = ("key", "evaluate", "cause", "correction")  # blocks inside a step
_NAMES = {"key": "Key", "evaluate": "Evaluate", "cause": "Cause", "correction": "Correction",
          "generalized": "Generalized", "answer": "Answer"}  # fmt: skip
_MAX_ISSUES = 20  # '<Step1>' * 20000 must not produce 20000 issue lines


@dataclass
class Step:
    """One `<StepN>` block. `body` is the step's text without its sub-blocks."""

    index: int  # number written in the tag (<Step3> -> 3)
    body: str
    key: str | None = None
    evaluate: str | None = None
    cause: str | None = None
    correction: str | None = None
    start: int = 0  # offset of the opening <StepN> tag in the parsed text
    end: int = 0  # offset just after </StepN> (or where the step was cut off)
    closed: bool = True


@dataclass
class Parsed:
    """What `parse` recovered, and what was wrong with the text (`issues`, human-readable)."""

    steps: list[Step]
    generalized: str | None
    answer: str | None
    issues: list[str]

    @property
    def ok(self) -> bool:
        """Steps and an answer present, and nothing wrong."""
        return bool(self.steps) and self.answer is not None and not self.issues

    @property
    def first_error(self) -> int | None:
        """1-based position in `steps` of the first step with a <Cause> or <Correction>; None if none."""
        for pos, s in enumerate(self.steps, 1):
            if s.cause is not None or s.correction is not None:
                return pos
        return None


@dataclass
class _OpenStep:
    index: int
    start: int
    cursor: int  # body text resumes here (after the opening tag or the last sub-block)
    pieces: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _OpenBlock:
    name: str  # lower-case tag name
    content: int  # offset just after the opening tag


class _Issues:
    """Issue lines, deduplicated and capped."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.seen: set[str] = set()
        self.dropped = 0

    def add(self, msg: str) -> None:
        if msg in self.seen:
            return
        if len(self.items) >= _MAX_ISSUES:
            self.dropped += 1
            return
        self.seen.add(msg)
        self.items.append(msg)

    def result(self) -> list[str]:
        return self.items + ([f"... and {self.dropped} more issues"] if self.dropped else [])


class _Parser:
    """The state machine: at most one open step, one open sub-block in it, or one open top-level block."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.steps: list[Step] = []
        self.step: _OpenStep | None = None
        self.sub: _OpenBlock | None = None  # Key/Evaluate/Cause/Correction inside self.step
        self.top: _OpenBlock | None = None  # Generalized/Answer
        self.answers: list[str] = []
        self.generalized: list[str] = []
        self.unclosed_answer = False
        self.free = 0  # top-level text (outside every block) starts here
        self.outside = False
        self.issues = _Issues()

    def run(self) -> Parsed:
        for m in _TAG.finditer(self.text):
            closing, name = m.group(1) == "/", m.group(2).lower()
            num = int(m.group(3)) if m.group(3) else None
            if name == "step":
                (self.close_step if closing else self.open_step)(m, num)
            elif name in _SUB:
                (self.close_sub if closing else self.open_sub)(m, name)
            else:
                (self.close_top if closing else self.open_top)(m, name)
        return self.finish()

    # -- steps -------------------------------------------------------------------------------------------
    def open_step(self, m: re.Match[str], num: int | None) -> None:
        index = num if num is not None else (self.steps[-1].index + 1 if self.steps else 1)
        if num is None:
            self.issues.add(f"<Step> tag without a number (taken as step {index})")
        if self.step is not None:
            self.issues.add(
                f"<Step{index}> opened inside step {self.step.index} (missing </Step{self.step.index}>)"
            )
            self.end_step(m.start(), m.start(), closed=False)
        elif self.top is not None:
            self.end_top(m.start(), complete=False, before=f"<Step{index}>")
        else:
            self.check_free(m.start())
        self.step = _OpenStep(index, m.start(), m.end())

    def close_step(self, m: re.Match[str], num: int | None) -> None:
        if self.step is None:
            self.stray(m)
            return
        if num is not None and num != self.step.index:
            self.issues.add(f"</Step{num}> closes step {self.step.index}")
        self.end_step(m.start(), m.end(), closed=True)

    def end_step(self, at: int, end: int, closed: bool) -> None:
        st = self.step
        assert st is not None
        if self.sub is not None:
            self.issues.add(f"<{_NAMES[self.sub.name]}> in step {st.index} is not closed")
            self.end_sub(at, at)
        st.pieces.append(self.text[st.cursor : at])
        body = "\n".join(p.strip() for p in st.pieces if p.strip())
        f = st.fields
        step = Step(st.index, body, f.get("key"), f.get("evaluate"), f.get("cause"), f.get("correction"),
                    start=st.start, end=end, closed=closed)  # fmt: skip
        if step.cause is not None and step.correction is None:
            self.issues.add(f"<Cause> without <Correction> in step {step.index}")
        if step.correction is not None and step.cause is None:
            self.issues.add(f"<Correction> without <Cause> in step {step.index}")
        if step.evaluate is not None and (step.cause is not None or step.correction is not None):
            self.issues.add(f"step {step.index} has both <Evaluate> and <Cause>/<Correction>")
        self.steps.append(step)
        self.step = None
        self.free = end

    # -- Key / Evaluate / Cause / Correction ----------------------------------------------------------------
    def open_sub(self, m: re.Match[str], name: str) -> None:
        st = self.step
        if st is None:
            self.issues.add(f"<{_NAMES[name]}> outside any step ignored")
            return
        if self.sub is not None:
            self.issues.add(f"<{_NAMES[self.sub.name]}> in step {st.index} is not closed")
            self.end_sub(m.start(), m.start())
        st.pieces.append(self.text[st.cursor : m.start()])
        self.sub = _OpenBlock(name, m.end())

    def close_sub(self, m: re.Match[str], name: str) -> None:
        st = self.step
        if st is None:
            self.stray(m)
            return
        if self.sub is None:
            self.issues.add(f"</{_NAMES[name]}> without <{_NAMES[name]}> in step {st.index}")
            st.pieces.append(self.text[st.cursor : m.start()])
            st.cursor = m.end()
            return
        if self.sub.name != name:
            self.issues.add(f"<{_NAMES[self.sub.name]}> closed by </{_NAMES[name]}> in step {st.index}")
        self.end_sub(m.start(), m.end())

    def end_sub(self, at: int, resume: int) -> None:
        st, sub = self.step, self.sub
        assert st is not None and sub is not None
        if sub.name in st.fields:
            self.issues.add(f"several <{_NAMES[sub.name]}> in step {st.index} (last one kept)")
        st.fields[sub.name] = self.text[sub.content : at].strip()
        st.cursor = resume
        self.sub = None

    # -- Generalized / Answer ---------------------------------------------------------------------------------
    def open_top(self, m: re.Match[str], name: str) -> None:
        tag = f"<{_NAMES[name]}>"
        if self.step is not None:
            self.issues.add(f"step {self.step.index} is not closed before {tag}")
            self.end_step(m.start(), m.start(), closed=False)
        elif self.top is not None:
            self.end_top(m.start(), complete=False, before=tag)
        else:
            self.check_free(m.start())
        self.top = _OpenBlock(name, m.end())

    def close_top(self, m: re.Match[str], name: str) -> None:
        top = self.top
        if top is None:
            self.stray(m)
            return
        if top.name != name:
            self.issues.add(f"<{_NAMES[top.name]}> closed by </{_NAMES[name]}>")
        (self.answers if top.name == "answer" else self.generalized).append(
            self.text[top.content : m.start()].strip()
        )
        self.top = None
        self.free = m.end()

    def end_top(self, at: int, complete: bool, before: str | None = None) -> None:
        top = self.top
        assert top is not None
        where = f"before {before}" if before else "(truncated?)"
        self.issues.add(f"<{_NAMES[top.name]}> is not closed {where}")
        if top.name == "answer":
            self.unclosed_answer = True  # an answer that was cut off is not trusted
        else:
            self.generalized.append(self.text[top.content : at].strip())
        self.top = None
        self.free = at

    # -- the rest ---------------------------------------------------------------------------------------------
    def stray(self, m: re.Match[str]) -> None:
        self.issues.add(f"stray {m.group(0)!r} ignored")
        if self.top is None:  # at top level: a stray tag is not "text outside tags"
            self.check_free(m.start())
            self.free = m.end()

    def check_free(self, upto: int) -> None:
        if not self.outside and self.text[self.free : upto].strip():
            self.outside = True

    def finish(self) -> Parsed:
        n = len(self.text)
        if self.step is not None:
            self.issues.add(f"step {self.step.index} is not closed (truncated?)")
            self.end_step(n, n, closed=False)
        elif self.top is not None:
            self.end_top(n, complete=False)
        else:
            self.check_free(n)
        if not self.steps:
            self.issues.add("no <StepN> tags")
        indices = [s.index for s in self.steps]
        if self.steps and indices != list(range(1, len(indices) + 1)):
            shown = ", ".join(map(str, indices[:12])) + (", ..." if len(indices) > 12 else "")
            self.issues.add(f"steps numbered {shown}")
        if len(self.answers) > 1:
            self.issues.add(f"{len(self.answers)} <Answer> tags (last one used)")
        if not self.answers and not self.unclosed_answer:
            self.issues.add("no <Answer> tag")
        if len(self.generalized) > 1:
            self.issues.add(f"{len(self.generalized)} <Generalized> tags (last one used)")
        if self.outside:
            self.issues.add("text outside tags ignored")
        return Parsed(
            steps=self.steps,
            generalized=self.generalized[-1] if self.generalized else None,
            answer=self.answers[-1] if self.answers else None,
            issues=self.issues.result(),
        )


def parse(text: str) -> Parsed:
    """Parse a hierarchical solution or a correction trace. Never raises; see `Parsed.issues`."""
    if not isinstance(text, str):
        return Parsed([], None, None, [f"input is not a string ({type(text).__name__})"])
    return _Parser(text).run()


def step_texts(parsed: Parsed) -> list[str]:
    """The step bodies, in order."""
    return [s.body for s in parsed.steps]


def prefix_before_step(text: str, index: int) -> str | None:
    """The exact text before the opening tag of the step at 1-based position `index`; None if no such step.

    Used as the student's steps 1..k-1 in the Cross-DPO prompt."""
    if not isinstance(text, str) or not isinstance(index, int):
        return None
    steps = parse(text).steps
    if not 1 <= index <= len(steps):
        return None
    return text[: steps[index - 1].start]


_TOP_CLOSE = re.compile(r"<\s{0,3}/\s{0,3}(?:answer|generalized)\s{0,3}>", re.IGNORECASE)


def split_at_step(text: str, index: int) -> tuple[str, str] | None:
    """The text cut where the step at 1-based position `index` begins: (everything before it, what the writer
    wrote there). For a step of the text: (`prefix_before_step`, that step's block exactly as written, tags and
    sub-blocks included). For index len(steps) + 1, a step the text is missing: (the text through its last step
    and the whitespace after it, the next block as written: up to the first `</Answer>` or `</Generalized>`, else
    the rest; "" when nothing follows). None otherwise. Linear time; never raises."""
    if not isinstance(text, str) or not isinstance(index, int):
        return None
    steps = parse(text).steps
    if 1 <= index <= len(steps):
        step = steps[index - 1]
        return text[: step.start], text[step.start : step.end]
    if not steps or index != len(steps) + 1:
        return None
    end = steps[-1].end
    cut = end + len(text[end:]) - len(text[end:].lstrip())
    close = _TOP_CLOSE.search(text, cut)
    return text[:cut], text[cut : close.end() if close else len(text)].rstrip()


def render_solution(steps: list[str], answer: str, generalized: str | None = None,
                    keys: dict[int, str] | None = None) -> str:  # fmt: skip
    """A hierarchical solution; `keys` maps a 1-based step number to its <Key> text."""
    keys = keys or {}
    out = []
    for i, text in enumerate(steps, 1):
        key = f"<Key>{keys[i]}</Key>\n" if keys.get(i) is not None else ""
        out.append(f"<Step{i}>\n{text}\n{key}</Step{i}>")
    if generalized is not None:
        out.append(f"<Generalized>{generalized}</Generalized>")
    out.append(f"<Answer>{answer}</Answer>")
    return "\n".join(out)


def render_step_correction(index: int, cause: str, correction: str) -> str:
    """One corrected step (a Cross-DPO completion): its <Cause> and <Correction>."""
    return f"<Step{index}>\n<Cause>{cause}</Cause>\n<Correction>{correction}</Correction>\n</Step{index}>"


def render_correction(steps: list[str], error_index: int | None, cause: str | None, correction: str | None,
                      answer: str) -> str:  # fmt: skip
    """A correction trace: steps before `error_index` (1-based) evaluated as correct, that step corrected, later
    steps omitted; `error_index=None` means every step is correct."""
    if error_index is not None:
        if not 1 <= error_index <= len(steps):
            raise ValueError(f"error_index {error_index} outside 1..{len(steps)}")
        if cause is None or correction is None:
            raise ValueError("an error step needs both a cause and a correction")
    last = len(steps) if error_index is None else error_index - 1
    out = [f"<Step{i}>\n{steps[i - 1]}\n<Evaluate>This step is correct.</Evaluate>\n</Step{i}>"
           for i in range(1, last + 1)]  # fmt: skip
    if error_index is not None:
        out.append(render_step_correction(error_index, cause or "", correction or ""))
    out.append(f"<Answer>{answer}</Answer>")
    return "\n".join(out)
