"""REER's search (Wang et al. 2025, arXiv 2509.06160): find a thinking trajectory z that makes a known good
solution y likely given the problem x, under a local scoring model.

Score (the paper's): the mean over y's tokens of log p(y_t | x, z, y_<t), each term clipped to [-2, 0], so a few
very unlikely tokens cannot dominate. Higher is better (it is minus a clipped log-perplexity).

Search: z is split into segments (sentences); step t rewrites one segment of every problem still searching: the
student proposes several candidates for that segment (continuing z's text before it), all candidates of all
problems are scored in batched forward passes, and a problem's best candidate replaces the segment only when it
scores strictly higher than the current z. A candidate that lowers (or keeps) the score is never kept. A problem
stops when its score reaches the threshold; the search stops after a step limit.

`clipped_mean` and `refine_step` are pure (tested without a model); `Scorer` does the batched forward passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CLIP_LOW = -2.0
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def clipped_mean(logps: Sequence[float], low: float = CLIP_LOW) -> float:
    """Mean of the log-probs, each clipped to [low, 0]; -inf-safe; `low` for an empty sequence."""
    if not logps:
        return low
    return sum(min(0.0, max(low, float(x))) for x in logps) / len(logps)


def split_segments(z: str, max_segments: int) -> list[str]:
    """Sentences (or lines) of z, the extras merged into the last one, at most `max_segments`; never empty."""
    parts = [p.strip() for p in _SENTENCE_END.split(z or "") if p and p.strip()]
    if not parts:
        return [""]
    if len(parts) > max_segments:
        parts = parts[: max_segments - 1] + [" ".join(parts[max_segments - 1 :])]
    return parts


def join_segments(segments: Sequence[str]) -> str:
    return " ".join(s for s in segments if s).strip()


def first_sentence(text: str) -> str:
    """A proposed segment: the generated text up to its first sentence end (or line end)."""
    parts = [p.strip() for p in _SENTENCE_END.split(text or "") if p and p.strip()]
    return parts[0] if parts else ""


@dataclass
class SearchState:
    """One problem's search: its current segments, their score, and the history of accepted changes."""

    key: str
    segments: list[str]
    score: float
    done: bool = False
    initial: float | None = None  # the draft's score (default: `score` at creation)
    history: list[dict] = field(default_factory=list)  # {"step", "segment", "score", "accepted"}

    def __post_init__(self) -> None:
        if self.initial is None:
            self.initial = self.score

    @property
    def z(self) -> str:
        return join_segments(self.segments)

    def score_after(self, steps: int) -> float:
        """The score after `steps` search steps (the draft's for 0; a finished search keeps its last score)."""
        upto = [h["score"] for h in self.history if h["step"] < steps]
        return upto[-1] if upto else float(self.initial if self.initial is not None else self.score)


def refine_step(
    states: list[SearchState],
    step: int,
    propose: Callable[[list[tuple[SearchState, int]]], list[list[str]]],
    score: Callable[[list[tuple[SearchState, str]]], list[float]],
    threshold: float | None = None,
) -> int:
    """One search step over all unfinished states; returns how many states accepted a rewrite.

    `propose([(state, segment index)])` gives candidate rewrites per state; `score([(state, z)])` scores whole
    trajectories (batched by the caller). A rewrite is kept only if it scores strictly higher than the state."""
    active = [s for s in states if not s.done]
    if not active:
        return 0
    targets = [(s, step % len(s.segments)) for s in active]
    proposals = propose(targets)
    flat: list[tuple[SearchState, str]] = []
    owners: list[tuple[int, str]] = []
    for n, ((s, j), cands) in enumerate(zip(targets, proposals, strict=True)):
        for c in cands:
            if c and c != s.segments[j]:
                flat.append((s, join_segments([*s.segments[:j], c, *s.segments[j + 1 :]])))
                owners.append((n, c))
    scores = score(flat) if flat else []
    best: dict[int, tuple[float, str]] = {}
    for (n, cand), sc in zip(owners, scores, strict=True):
        if n not in best or sc > best[n][0]:
            best[n] = (sc, cand)
    accepted = 0
    for n, (s, j) in enumerate(targets):
        got = best.get(n)
        keep = got is not None and got[0] > s.score
        if keep:
            s.segments[j] = got[1]
            s.score = got[0]
            accepted += 1
        s.history.append({"step": step, "segment": j, "score": round(s.score, 5), "accepted": keep,
                          "best_candidate": None if got is None else round(got[0], 5)})  # fmt: skip
        if threshold is not None and s.score >= threshold:
            s.done = True
    return accepted


class Scorer:
    """Batched clipped log-prob of targets given contexts under one causal LM (one forward pass per batch)."""

    def __init__(self, model, tokenizer, batch_size: int = 16):
        """`model`, `tokenizer`: a loaded causal LM (e.g. the generation backend's, so it is loaded once)."""
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.tokens_scored = 0

    def score(self, pairs: Sequence[tuple[str, str]], low: float = CLIP_LOW) -> list[float]:
        """pairs: (context, target) texts; the context already has the chat template (no special tokens added)."""
        import torch

        tok, model = self.tokenizer, self.model
        out: list[float] = [0.0] * len(pairs)
        enc = [
            (tok(c, add_special_tokens=False)["input_ids"], tok(t, add_special_tokens=False)["input_ids"])
            for c, t in pairs
        ]
        order = sorted(range(len(pairs)), key=lambda i: -(len(enc[i][0]) + len(enc[i][1])))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            seqs = [enc[i][0] + enc[i][1] for i in idx]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            ids, mask = ids.to(model.device), mask.to(model.device)
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            for r, i in enumerate(idx):
                n_ctx, n_tgt = len(enc[i][0]), len(enc[i][1])
                # token t of the sequence is predicted at position t-1
                vals = logp[r, n_ctx - 1 : n_ctx - 1 + n_tgt].tolist()
                out[i] = clipped_mean(vals, low)
                self.tokens_scored += n_ctx + n_tgt
        return out
