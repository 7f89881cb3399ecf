"""The data objects every stage shares: a problem and its machine-checkable reference steps."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RefStep(BaseModel):
    """One step of a reference solution. `expr`/`value` are set when the step is machine-checkable
    (synthetic problems; GSM8K `<<expr=value>>` calculator annotations)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    expr: str | None = None  # e.g. "48/2"
    value: str | None = None  # e.g. "24"


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    question: str
    solution: str  # reference solution as written by the dataset (free text)
    answer: str  # final answer (string: "18", "\\frac{1}{2}", ...)
    steps: list[RefStep] = Field(default_factory=list)  # empty when the solution has no checkable steps
    source: str  # "synthetic", "gsm8k", "math", "hf:<name>"
    level: str | None = None
    subject: str | None = None

    @property
    def checkable(self) -> bool:
        return bool(self.steps) and all(s.value is not None for s in self.steps)
