"""Teachers: an OpenAI-compatible LLM, a local Hugging Face model, or the rule-based reference teacher."""

from __future__ import annotations

from pathlib import Path

from .base import CorrectionMode, CorrectionRequest, Teacher, TeacherOutput

__all__ = ["CorrectionMode", "CorrectionRequest", "Teacher", "TeacherOutput", "make_teacher"]

SPEND_LEDGER = "teacher_spend.jsonl"  # in the run folder: the tokens the API teacher spent, all invocations


def make_teacher(cfg, run_dir: Path) -> Teacher:
    """Build the teacher named by the run config's `teacher` section."""
    t = cfg.teacher
    if t.kind == "reference":
        from .reference import ReferenceTeacher

        return ReferenceTeacher(mark_text=False)  # describe() and the report say it is rule-based
    from ..errors import UserError
    from .llm import LLMTeacher

    if not t.model:
        raise UserError(f"teacher.model is required for teacher.kind={t.kind!r}")
    if t.kind == "openai":
        from .openai_chat import OpenAIChat

        chat = OpenAIChat(
            model=t.model,
            base_url=t.base_url,
            api_key_env=t.api_key_env,
            cache_dir=Path(t.cache_dir) if t.cache_dir else run_dir / "teacher_cache",
            max_concurrency=t.max_concurrency,
            max_retries=t.max_retries,
            timeout_s=t.timeout_s,
            temperature=t.temperature,
            max_tokens=t.max_tokens,
            price_in_per_1m=t.price_in_per_1m,
            price_out_per_1m=t.price_out_per_1m,
            backoff_base_s=t.backoff_base_s,
            backoff_max_s=t.backoff_max_s,
            max_spend_usd=t.max_spend_usd,
            max_total_tokens=t.max_total_tokens,
            spend_ledger=run_dir / SPEND_LEDGER,
        )
        return LLMTeacher.from_openai(chat)
    # a local Hugging Face model
    from ..generation import make_backend
    from ..models import resolve_model
    from .local import LocalChat

    try:
        path = resolve_model(t.model)
    except UserError as e:
        raise UserError(f"teacher.model: {e}") from None
    g = cfg.generation
    backend = make_backend(
        g.backend, path, cfg.student.dtype, g.batch_size, g.vllm_gpu_memory_utilization,
        g.tensor_parallel_size, g.data_parallel_size,
    )  # fmt: skip
    chat = LocalChat(backend, backend.tokenizer, t.max_tokens)
    return LLMTeacher(chat.chat_many, name=f"local:{t.model}", usage=chat.usage)
