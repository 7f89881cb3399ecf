"""Cross-DPO preference pairs (paper: D_corr = {(x, s_<k, (a+_k, c+_k), (a-_k, c-_k))}).

The paper's pair (config `pairs:` defaults, `context: ht`, `chosen: cause_correction`):
prompt   = the chat-templated HT prompt + problem, then the student's own steps 1..k-1 exactly as it wrote them:
           an unfinished assistant turn that the completions continue (no end-of-turn token after it);
chosen   = the teacher's <Cause> and <Correction> of step k, as one `<Stepk>...</Stepk>` block;
rejected = the student's own analysis and correction of step k, as one block.

Why knobs: read by hand, those pairs differ in form (tags) before content, and DPO learns the tags. So:
- `context: correction`: the prompt is the context the student sees when it self-corrects (the plain correction
  prompt with its solution, steps 1..k-1 marked correct; `stages.correct.correction_context`), ending just
  before `<Stepk>`;
- `chosen: student_form`: chosen = step k corrected in the student's own words, rejected = step k as the student
  wrote it (not its self-analysis), so the two differ only where the error is (see `completions`).
Step k may be one past the student's last step: a missing step (`correct.missing_step: own_k`); see
`completions` for what is rejected then.

Chosen and rejected are one block each: no end-of-sequence token is appended, and a pair whose text holds a
special token's text (e.g. `<|im_end|>`, which the tokenizer would read as the token itself and so close the
turn) is not built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from . import xmlformat

# End-of-turn / end-of-sequence markers of common chat formats (ChatML, Llama 3, GPT-2, Llama 2, Phi-3, Gemma).
# The pairs stage passes the student tokenizer's own special tokens instead.
COMMON_SPECIAL_TOKENS = (
    "<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|start_header_id|>",
    "</s>", "<|end|>", "<end_of_turn>", "<start_of_turn>",
)  # fmt: skip


Context = Literal["ht", "correction"]
ChosenForm = Literal["cause_correction", "student_form"]
DEFAULT_VARIANT: tuple[Context, ChosenForm] = ("ht", "cause_correction")  # the paper's pair


@dataclass
class Pair:
    id: str
    prompt: str
    chosen: str
    rejected: str
    step: int  # k, 1-based position of the first wrong step (len(steps) + 1: a missing step)
    context: Context = "ht"
    chosen_form: ChosenForm = "cause_correction"

    def to_row(self) -> dict:
        return asdict(self)


def variants(context: str, chosen: str) -> list[tuple[Context, ChosenForm]]:
    """The (context, chosen form) pairs a `pairs:` config asks for: `both` expands to its two options."""
    contexts: list[Context] = ["ht", "correction"] if context == "both" else [context]  # type: ignore[list-item]
    forms: list[ChosenForm] = (
        ["cause_correction", "student_form"] if chosen == "both" else [chosen]  # type: ignore[list-item]
    )
    return [(c, f) for c in contexts for f in forms]


def variant_id(key: str, context: Context, chosen_form: ChosenForm) -> str:
    """A pair's id: the correction row's key, suffixed by the parts that differ from the paper's pair
    ("key", "key@correction", "key@student_form", "key@correction+student_form"): distinct within a row."""
    parts = [p for p, d in zip((context, chosen_form), DEFAULT_VARIANT, strict=True) if p != d]
    return key + ("@" + "+".join(parts) if parts else "")


def step_block(text: str, index: int) -> str:
    """A step's text as one closed `<Step{index}>...</Step{index}>` block (closing a truncated one)."""
    text = text.strip()
    if not text.lower().startswith(f"<step{index}>"):
        text = f"<Step{index}>\n{text}"
    if not text.lower().endswith(f"</step{index}>"):
        text = f"{text}\n</Step{index}>"
    return text


def completions(
    k: int, cause: str, correction: str, written: str, student_step_k: str, chosen_form: ChosenForm,
    step_fix: str | None = None, missing: bool = False,
) -> tuple[str, str]:
    """(chosen, rejected) of step k.

    cause_correction: chosen = `<Stepk><Cause>..</Cause><Correction>..</Correction></Stepk>`, rejected = the
    student's own analysis of step k (`student_step_k`).
    student_form: chosen = `<Stepk>\n{corrected step}\n</Stepk>`, the corrected step being `step_fix` (the
    rule-based teacher's step k as the student wrote it with the wrong result replaced; it holds its tags) or
    else the teacher's <Correction> text as is; rejected = `written`, what the student wrote at step k. For a
    step of its solution that is the step's block as written. For a `missing` step (k = len(steps) + 1) it is the
    block the student wrote there instead, verbatim (usually its `<Answer>`, or `<Generalized>`): the pair then
    says "write the missing step here, not the answer yet", and the rejected is a real continuation of the same
    prefix (on-policy, as DPO assumes). Dressing the answer up as a `<Stepk>` block would reject a text the
    student never wrote, and teach "do not state that number" instead of "do not stop early"."""
    if chosen_form == "cause_correction":
        return xmlformat.render_step_correction(k, cause, correction), step_block(student_step_k, k)
    chosen = step_block(step_fix if step_fix and step_fix.strip() else correction, k)
    return chosen, (written.strip() if missing else step_block(written, k))


def build_pair(
    pair_id: str,
    chat_prefix: str,
    student_solution: str,
    teacher_trace: str,
    student_step_k: str,
    special_tokens: Iterable[str] = COMMON_SPECIAL_TOKENS,
    *,
    context: Context = "ht",
    chosen_form: ChosenForm = "cause_correction",
    correction_context: Callable[[int], str] | None = None,
    step_fix: str | None = None,
) -> tuple[Pair | None, str | None]:
    """Build one pair, or say why not (a reason code).

    chat_prefix: the student's chat-templated HT prompt, ending with the assistant header (context `ht`).
    student_solution: the student's wrong solution (untrusted text), whose steps 1..k-1 become the prefix.
    teacher_trace: the teacher's correction trace; its first step with <Cause>/<Correction> is k, a step of the
        student's solution or the one after its last (a missing step).
    student_step_k: the student's own analysis and correction of step k (text of one step block).
    special_tokens: texts that must not occur in the prefix or the completions (the tokenizer's specials).
    context / chosen_form: which pair (see the module docstring and `completions`).
    correction_context: k -> the self-correction context ending just before `<Stepk>` (context `correction`).
    step_fix: the teacher's step k in the student's own words, fixed (`chosen_form="student_form"`).
    """
    trace = xmlformat.parse(teacher_trace)
    k = trace.first_error
    if k is None:
        return None, "teacher_found_no_error"
    step = trace.steps[k - 1]
    if not (step.cause and step.correction):
        return None, "teacher_step_incomplete"
    split = xmlformat.split_at_step(student_solution, k)
    if split is None:
        return None, "step_not_in_student_solution"
    prefix, written = split
    if context == "correction":
        if correction_context is None:
            raise ValueError("context 'correction' needs correction_context (k -> the self-correction context)")
        prompt = correction_context(k)
    else:
        prompt = chat_prefix + prefix
    if chosen_form == "student_form" and not written.strip():
        return None, "nothing_written_at_step"
    missing = k > len(xmlformat.parse(student_solution).steps)
    chosen, rejected = completions(
        k, step.cause.strip(), step.correction.strip(), written, student_step_k, chosen_form, step_fix, missing
    )
    if rejected.strip() == chosen.strip():
        return None, "chosen_equals_rejected"
    # the student's text in the prompt: its steps before k (ht), or its whole solution, shown in the correction prompt
    student_text = prefix if context == "ht" else student_solution
    if any(tok and tok in text for tok in special_tokens for text in (student_text, chosen, rejected)):
        return None, "special_token_in_text"
    return Pair(pair_id, prompt, chosen, rejected, k, context, chosen_form), None
