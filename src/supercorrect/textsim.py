"""Text overlap for REER's leakage check: how much of a known answer y a searched trajectory z already contains.

A trajectory that copies y lowers y's perplexity trivially and teaches nothing. ROUGE-L (F1 of the longest common
subsequence of tokens) and n-gram containment (the share of y's n-grams that occur in z) are computed here on
lower-cased word/number/symbol tokens, without any package (the LCS is the textbook O(len z * len y) table).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[a-z]+|[^\sa-z\d]", re.I)


def tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text or "")]


def lcs_length(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) between two texts; 0 when either is empty."""
    c, r = tokens(candidate), tokens(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def ngram_containment(z: str, y: str, n: int = 3) -> float:
    """Share of y's distinct n-grams that also occur in z (0 when y has none)."""
    ys = ngrams(tokens(y), n)
    return len(ys & ngrams(tokens(z), n)) / len(ys) if ys else 0.0


def quantiles(values: list[float], qs: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)) -> dict[str, float]:
    """Nearest-rank quantiles, keyed "p0", "p25", ... (empty dict for no values)."""
    if not values:
        return {}
    s = sorted(values)
    return {f"p{round(q * 100)}": round(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))], 4) for q in qs}
