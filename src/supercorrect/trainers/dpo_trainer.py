"""Cross-DPO's token layout and trainer class: pairs tokenised by us, then TRL's DPOTrainer as it is.

Why we tokenise ourselves (the prompt continued, no EOS, the prompt left-truncated) is in `trainers.dpo`'s
docstring. `CrossDPOTrainer` is the two-sequence path; `trainers.shared_prefix` subclasses it for the one-sequence
path; `trainers.dpo` builds and runs either.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import DPOTrainer

from ..errors import UserError

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, chosen: str, rejected: str, max_length: int
) -> dict[str, Any]:
    """Token ids of one pair: prompt, chosen and rejected tokenised separately, no special tokens, no EOS.

    The prompt ids are exactly `tokenizer(prompt)`, so they are a prefix of what the model sees at inference
    (the prompt is tokenised alone, then generation continues). Over `max_length`, the prompt loses tokens from
    its START (the student's last steps stay next to the step being corrected); only if a completion alone does not
    fit, both completions are cut at the end. `prompt_truncated` / `completion_truncated` count the tokens dropped.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    prompt_ids, chosen_ids, rejected_ids = ids(prompt), ids(chosen), ids(rejected)
    if not prompt_ids:
        raise ValueError("empty prompt: the first completion token would have no context")

    completion_truncated = 0
    keep = max_length - 1  # at least one prompt token must precede the completion
    if max(len(chosen_ids), len(rejected_ids)) > keep:
        completion_truncated = max(0, len(chosen_ids) - keep) + max(0, len(rejected_ids) - keep)
        chosen_ids, rejected_ids = chosen_ids[:keep], rejected_ids[:keep]

    budget = max_length - max(len(chosen_ids), len(rejected_ids))
    prompt_truncated = max(0, len(prompt_ids) - budget)
    if prompt_truncated:
        prompt_ids = prompt_ids[prompt_truncated:]

    return {
        "prompt_ids": prompt_ids,
        "chosen_ids": chosen_ids,
        "rejected_ids": rejected_ids,
        "prompt_truncated": prompt_truncated,
        "completion_truncated": completion_truncated,
    }


def build_dataset(
    tokenizer: PreTrainedTokenizerBase, pairs: list[dict], max_length: int
) -> tuple[Dataset, dict[str, int]]:
    """Tokenise pairs into a `prompt_ids`/`chosen_ids`/`rejected_ids` dataset; drop pairs with no signal."""
    stats = {"n_pairs": len(pairs), "n_dropped": 0, "n_prompt_truncated": 0, "n_completion_truncated": 0}
    rows = []
    for i, pair in enumerate(pairs):
        texts = [
            pair.get(key) if isinstance(pair, dict) else None for key in ("prompt", "chosen", "rejected")
        ]
        if not all(isinstance(text, str) for text in texts):
            raise UserError(f"preference pair {i}: needs string fields 'prompt', 'chosen' and 'rejected'")
        prompt, chosen, rejected = texts
        if not (prompt and chosen and rejected) or chosen == rejected:
            stats["n_dropped"] += 1  # empty or identical completions carry no preference
            continue
        row = tokenize_pair(tokenizer, prompt, chosen, rejected, max_length)
        stats["n_prompt_truncated"] += row["prompt_truncated"] > 0
        stats["n_completion_truncated"] += row["completion_truncated"] > 0
        rows.append(row)
    if not rows:
        raise UserError(f"no usable preference pairs among {len(pairs)}")
    return Dataset.from_list(rows), stats


class CrossDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer fed with our own token ids (see the module docstring for why)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # Replaces TRL's text pipeline (extract prompt, add EOS, tokenise, filter): the ids are used as they are.
        missing = [column for column in TOKEN_COLUMNS if column not in dataset.column_names]
        if missing:
            raise ValueError(f"{dataset_name} dataset is not tokenised by build_dataset: missing {missing}")
        return dataset
