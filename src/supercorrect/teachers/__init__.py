"""Teachers: an OpenAI-compatible LLM, a local Hugging Face model, or the rule-based reference teacher."""

from .base import CorrectionMode, CorrectionRequest, Teacher, TeacherOutput

__all__ = ["CorrectionMode", "CorrectionRequest", "Teacher", "TeacherOutput"]
