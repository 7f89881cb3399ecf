"""Cross-DPO preference pairs (paper: D_corr = {(x, s_<k, (a+_k, c+_k), (a-_k, c-_k))}).

prompt   = the chat-templated HT prompt + problem, then the student's own steps 1..k-1 exactly as it wrote them:
           an unfinished assistant turn that the completions continue (no end-of-turn token after it);
chosen   = the teacher's <Cause> and <Correction> of step k, as one `<Stepk>...</Stepk>` block;
rejected = the student's own analysis and correction of step k, as one block.
Chosen and rejected are one step each: no end-of-sequence token is appended, and a pair whose text holds a
special token's text (e.g. `<|im_end|>`, which the tokenizer would read as the token itself and so close the
turn) is not built.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from . import xmlformat

# End-of-turn / end-of-sequence markers of common chat formats (ChatML, Llama 3, GPT-2, Llama 2, Phi-3, Gemma).
# The pairs stage passes the student tokenizer's own special tokens instead.
COMMON_SPECIAL_TOKENS = (
    "<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|start_header_id|>",
    "</s>", "<|end|>", "<end_of_turn>", "<start_of_turn>",
)  # fmt: skip


@dataclass
class Pair:
    id: str
    prompt: str
    chosen: str
    rejected: str
    step: int  # k, 1-based position of the first wrong step

    def to_row(self) -> dict:
        return asdict(self)


def step_block(text: str, index: int) -> str:
    """A step's text as one closed `<Step{index}>...</Step{index}>` block (closing a truncated one)."""
    text = text.strip()
    if not text.lower().startswith(f"<step{index}>"):
        text = f"<Step{index}>\n{text}"
    if not text.lower().endswith(f"</step{index}>"):
        text = f"{text}\n</Step{index}>"
    return text


def build_pair(
    pair_id: str,
    chat_prefix: str,
    student_solution: str,
    teacher_trace: str,
    student_step_k: str,
    special_tokens: Iterable[str] = COMMON_SPECIAL_TOKENS,
) -> tuple[Pair | None, str | None]:
    """Build one pair, or say why not.

    chat_prefix: the student's chat-templated prompt, ending with the assistant header.
    student_solution: the student's wrong solution (untrusted text), whose steps 1..k-1 become the prefix.
    teacher_trace: the teacher's correction trace; its first step with <Cause>/<Correction> is k.
    student_step_k: the student's own analysis and correction of step k (text of one step block).
    special_tokens: texts that must not occur in the prefix or the completions (the tokenizer's specials).
    """
    trace = xmlformat.parse(teacher_trace)
    k = trace.first_error
    if k is None:
        return None, "teacher_found_no_error"
    step = trace.steps[k - 1]
    if not (step.cause and step.correction):
        return None, "teacher_step_incomplete"
    prefix = xmlformat.prefix_before_step(student_solution, k)
    if prefix is None:
        return None, "step_not_in_student_solution"
    chosen = xmlformat.render_step_correction(k, step.cause.strip(), step.correction.strip())
    rejected = step_block(student_step_k, k)
    if rejected.strip() == chosen.strip():
        return None, "chosen_equals_rejected"
    if any(tok and tok in text for tok in special_tokens for text in (prefix, chosen, rejected)):
        return None, "special_token_in_text"
    return Pair(pair_id, chat_prefix + prefix, chosen, rejected, k), None
