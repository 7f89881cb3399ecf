"""Teachers: an OpenAI-compatible LLM, a local Hugging Face model, or the rule-based reference teacher."""

from __future__ import annotations

from pathlib import Path

from .base import CorrectionMode, CorrectionRequest, Teacher, TeacherOutput

__all__ = ["CorrectionMode", "CorrectionRequest", "Teacher", "TeacherOutput", "make_teacher"]

SPEND_LEDGER = "teacher_spend.jsonl"  # in the run folder: the tokens the API teacher spent, all invocations
BATCH_DIR = "teacher_batches"  # in the run folder: one record per Batch API batch (teachers.openai_batch)


def make_openai_chat(t, default_cache: Path, ledger: Path):
    """An `OpenAIChat` from a teacher-like config section (the teacher, or the evaluation's judge)."""
    from .openai_chat import OpenAIChat

    return OpenAIChat(
        model=t.model,
        base_url=t.base_url,
        api_key_env=t.api_key_env,
        cache_dir=Path(t.cache_dir) if t.cache_dir else default_cache,
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
        spend_ledger=ledger,
        batch_price_in_per_1m=getattr(t, "batch_price_in_per_1m", None),
        batch_price_out_per_1m=getattr(t, "batch_price_out_per_1m", None),
    )


def batched(chat, t, state_dir: Path):
    """A `BatchChat` (OpenAI Batch API) over `chat`, configured by a teacher-like section's `batch_*` keys."""
    from .openai_batch import BatchChat

    return BatchChat(
        chat, state_dir=state_dir, poll_s=t.batch_poll_s, max_wait_s=t.batch_max_wait_s, retry=t.batch_retry,
        max_rounds=t.batch_max_rounds, max_requests=t.batch_max_requests,
    )  # fmt: skip


def make_teacher(cfg, run_dir: Path) -> Teacher:
    """Build the teacher named by the run config's `teacher` section."""
    t = cfg.teacher
    if t.kind == "reference":
        from .reference import ReferenceTeacher

        # describe() and the report say it is rule-based
        return ReferenceTeacher(mark_text=False, missing_step=cfg.correct.missing_step)
    from ..errors import UserError
    from .llm import LLMTeacher

    if not t.model:
        raise UserError(f"teacher.model is required for teacher.kind={t.kind!r}")
    if t.kind == "openai":
        chat = make_openai_chat(t, run_dir / "teacher_cache", run_dir / SPEND_LEDGER)
        if t.batch:
            batch = batched(chat, t, run_dir / BATCH_DIR)
            return LLMTeacher(batch.chat_many, name=f"openai-batch:{t.model}", usage=chat.usage.to_dict,
                              info=batch.describe())  # fmt: skip
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
