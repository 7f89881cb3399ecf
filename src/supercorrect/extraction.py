"""What an answer extractor returns: the final answer found in a model's text and which rule found it.

Its own module because both extractors use it, ours (`grading.extract_answer`) and Qwen2.5-Math's
(`extract_qwen.extract_answer_qwen`), and `grading` picks between them: neither may import the other's home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ExtractionSource = Literal["answer_tag", "boxed", "last_number", "final_answer", "answer_phrase"]


@dataclass
class Extraction:
    """The final answer found in a model's text and where it came from (None when nothing was found)."""

    answer: str | None
    source: ExtractionSource | None
