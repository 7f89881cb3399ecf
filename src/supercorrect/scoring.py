"""Mean token negative log-likelihood of completions under a model, batched: how surprised a model is by a text.

LEMA's "sense of error" (An et al. 2024) is the gap between the perplexity a model assigns to wrong and to
correct solutions of the same problem; training on mistakes should widen it. This measures the NLL of each
completion given its prompt (the user turn through the model's chat template), over the completion's tokens
only, in batches sorted by length so padding stays small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .models import chat_prompt, load_model, load_tokenizer


def completion_token_ids(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of the chat-formatted prompt followed by the completion, and where the completion starts."""
    head = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    body = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return head + body, len(head)


def completion_nll(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Mean NLL (nats per token) of each completion given its prompt; `nan` for an empty completion."""
    import torch

    encoded = [completion_token_ids(tokenizer, p, c) for p, c in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out = [math.nan] * len(encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        target = torch.zeros((len(idx), width), dtype=torch.bool)  # positions whose token is scored
        for row, i in enumerate(idx):
            toks, start = encoded[i]
            ids[row, : len(toks)] = torch.tensor(toks)
            mask[row, : len(toks)] = 1
            target[row, start : len(toks)] = True
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok_logp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        scored = target[:, 1:].to(device)
        sums = -(tok_logp * scored).sum(-1)
        counts = scored.sum(-1)
        for row, i in enumerate(idx):
            n = int(counts[row])
            out[i] = float(sums[row]) / n if n else math.nan
    return out


def completion_nll_at(
    model_path: str, pairs: Sequence[tuple[str, str]], dtype: str = "float32", batch_size: int = 8
) -> list[float]:
    """`completion_nll` with the model and tokenizer loaded from `model_path` (and released after)."""
    model = load_model(model_path, dtype)
    try:
        return completion_nll(model, load_tokenizer(model_path), pairs, batch_size)
    finally:
        del model
