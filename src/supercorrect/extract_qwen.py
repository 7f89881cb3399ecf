"""Qwen2.5-Math-style final-answer extraction (`grading.extractor: qwen`), for numbers comparable with that protocol.

Published MATH/GSM8K numbers of Qwen2.5-Math-7B-Instruct (the paper's base model) come from Qwen's evaluation
harness (QwenLM/Qwen2.5-Math, evaluation/parser.py `extract_answer`), whose extraction differs from ours
(`grading.extract_answer`: last `<Answer>` block, else last box, else last number). This module reproduces its
behaviour for math answers, written from its description, not copied:

1. a Minerva-style "final answer is $X$. I hope" sentence: X;
2. else, if the text contains "boxed" anywhere: what follows its LAST occurrence: the brace-balanced content
   when it starts with "{" (an unclosed box runs to the end of the text), else the text up to the next "$";
3. else the text after the last "he answer is" ("The answer is"), else after the last "final answer is";
4. else the last number (`-?\\d*\\.?\\d+` after removing thousands commas), else "".

It never looks at `<Answer>` tags: that is the point of the protocol difference (an HT-prompt answer that is
only in `<Answer>` falls to rule 3 or 4). The result is then cleaned as the harness does (`strip_string`,
the part that matters for numbers and LaTeX answers): line breaks, a leading ":", trailing "." and "/",
`\\left`/`\\right`, `\\!`, `tfrac`/`dfrac`, a trailing `\\text{unit}`, unit words (its list less one-letter ones), degrees, dollar signs, `\\%`, `\\text{...}`,
leading `x=` style names, spaces, trailing `.0`, `\\frac12` -> `\\frac{1}{2}` and `a/b` -> `\\frac{a}{b}`.
Equivalence is still decided by our Math-Verify grader, not by the harness's `math_equal`.

Linear time on untrusted text; never raises (a failure is "no answer").
"""

from __future__ import annotations

import re

from .extraction import Extraction

_NUMBER = re.compile(r"-?\d*\.?\d+")
_TEXT_TAIL = re.compile(r"\\text\{[^{}]*\}$")
_TEXT = re.compile(r"\\text\{([^{}]*)\}")
_MBOX = re.compile(r"\\mbox\{[^{}]*\}")
_SQRT_BARE = re.compile(r"\\sqrt(\w+)")
_TRAILING_ZEROS_MID = re.compile(r"(\d+)\.0*([^\d])")
_TRAILING_ZEROS_END = re.compile(r"(\d+)\.0*$")
_SIMPLE_FRACTION = re.compile(r"^(-?\d+)/(\d+)$")
# Unit words dropped after a number, as the harness does (its list, less the one-letter "units" such as "a" or
# "m" that would eat variables of algebraic answers).
_UNITS = (
    "dollar", "cent", "percent", "degree", "mile", "mph", "kmph", "kmh", "km", "cm", "mm", "meter", "metre", "inch",
    "inches", "feet", "ft", "yard", "hour", "hr", "minute", "min", "second", "sec", "day", "month", "year", "yr",
    "kg", "gm", "lb", "gallon", "liter", "litre", "unit", "square", "cubic", "sq", "hectare", "acre", "rupee", "rs",
)  # fmt: skip
_UNIT = re.compile(r"(^|\W)(?:" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")s?(?=$|\W)")
_NAMES = ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to")


def extract_answer_qwen(text: str) -> Extraction:
    """The final answer as Qwen2.5-Math's harness extracts it (see the module docstring); source says which rule."""
    try:
        raw, source = _extract(text)
        answer = clean(raw) if raw else ""
    except Exception:  # untrusted input must never crash the caller
        return Extraction(None, None)
    return Extraction(answer, source) if answer else Extraction(None, None)


def _extract(text: str) -> tuple[str, str | None]:
    text = text.replace("\u043a\u0438", "")  # a step-separator token of Qwen's PRM data
    if "final answer is $" in text and "$. I hope" in text:
        return text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip(), "final_answer"
    if "boxed" in text:
        tail = text.rsplit("boxed", 1)[1]
        if not tail:
            return "", None
        if tail[0] != "{":
            return tail.split("$", 1)[0].strip(), "boxed"
        depth, end = 1, len(tail)
        for i, ch in enumerate(tail[1:], 1):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        return tail[1:end], "boxed"
    for marker in ("he answer is", "final answer is"):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip(), "answer_phrase"
    numbers = _NUMBER.findall(text.replace(",", ""))
    return (numbers[-1], "last_number") if numbers else ("", None)


def clean(answer: str) -> str:
    """The harness's clean-up of an extracted answer (the numeric and LaTeX part of its `strip_string`)."""
    s = re.sub(r"\n\s*", "", answer)
    if s.startswith(":"):
        s = s[1:]
    s = s.strip().rstrip(".").rstrip("/").strip()
    s = s.replace("\\!", "").replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    untailed = _TEXT_TAIL.sub("", s).strip()
    if untailed:
        s = untailed
    for _ in range(2):
        dropped = _UNIT.sub(r"\1", s)
        if dropped.strip():
            s = dropped
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = _TEXT.sub(r"\1", s)
    for name in _NAMES:
        s = s.replace(name, "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = _MBOX.sub("", s)
    s = _TRAILING_ZEROS_MID.sub(r"\1\2", s)
    s = _TRAILING_ZEROS_END.sub(r"\1", s)
    if s.startswith("."):
        s = "0" + s
    head, eq, rest = s.partition("=")
    if eq and "=" not in rest and len(head) <= 2:
        s = rest
    s = _SQRT_BARE.sub(r"\\sqrt{\1}", s).replace(" ", "")
    s = _fix_fracs(s)
    m = _SIMPLE_FRACTION.match(s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return s


def _fix_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}` -> `\\frac{1}{72}`; anything else unchanged."""
    head, *parts = s.split("\\frac")
    out = [head]
    for part in parts:
        out.append("\\frac")
        if part.startswith("{") or len(part) < 2:
            if len(part) < 2 and not part.startswith("{"):
                return s  # "\frac" with less than two characters after it: leave the text alone
            out.append(part)
            continue
        a, b, rest = part[0], part[1], part[2:]
        out.append(f"{{{a}}}{{{b}}}{rest}" if b != "{" else f"{{{a}}}{b}{rest}")
    return "".join(out)
