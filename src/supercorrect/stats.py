"""Statistics for accuracy claims: intervals, paired tests, and the spread across seeds.

Why this module exists: on a few hundred problems one problem is several tenths of a point, and a difference of a
few points between two models can be noise. Every accuracy this toolkit reports therefore comes with a 95%
interval, and every "model A beats its parent B" with a *paired* test on the same problems, which is far more
sensitive than comparing two independent intervals because most problems are solved (or failed) by both models.

- `wilson_interval`: the Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998, method 3).
  Unlike the normal "Wald" interval it stays inside [0, 1] and keeps its coverage near 0% and 100%.
- `bootstrap_interval`: percentile bootstrap of the mean of per-problem outcomes (the option for non-binary scores).
- `paired_bootstrap_interval`: percentile bootstrap of the mean paired difference, resampling *pairs*
  (problem, or (seed, problem) when seeds are stacked), so the correlation between the two models is kept; with
  `clusters`, whole clusters are resampled (all seeds of one problem together), which is the honest interval
  when the same problems recur across seeds.
- `mcnemar_exact`: the exact (conditional) McNemar test, a two-sided binomial test of b against Bin(b + c, 1/2) on
  the discordant pairs (b: A right and B wrong, c: the reverse); the concordant pairs carry no information about
  which model is better. Computed exactly with integer arithmetic (`math.comb`), no SciPy needed.
- `compare_paired`: joins two per-problem outcome maps on their keys and returns all of the above at once.
- `across_seeds`: mean, sample standard deviation, min and max of one number over training seeds.
- `constant_guess`: the chance baseline of a labelling task (the most frequent label and how often it is right):
  a model that names the first wrong step must beat always naming the commonest step before it can be said to
  locate errors.

All randomness is a `numpy.random.Generator` seeded by the caller, so a report is reproducible to the digit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from math import comb, sqrt
from statistics import NormalDist
from typing import Literal

import numpy as np

IntervalMethod = Literal["wilson", "bootstrap"]
DEFAULT_LEVEL = 0.95
DEFAULT_BOOTSTRAP = 10_000


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval [low, high] at `level`, and how it was computed."""

    low: float
    high: float
    level: float
    method: str

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class Proportion:
    """An accuracy: `k` correct of `n`, its estimate k/n and a confidence interval."""

    k: int
    n: int
    interval: Interval

    @property
    def estimate(self) -> float:
        return self.k / self.n if self.n else float("nan")


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same items (A - B).

    `n` items in both; `a_correct`/`b_correct` how many each got right; `a_only` (A right, B wrong) and `b_only`
    (B right, A wrong) are the discordant pairs McNemar's test uses; `diff` = (a_only - b_only) / n is the
    difference in accuracy; `interval` its paired-bootstrap interval; `p_value` the exact McNemar p-value.
    `unmatched` counts items present in only one of the two (left out of everything above)."""

    n: int
    a_correct: int
    b_correct: int
    a_only: int
    b_only: int
    interval: Interval
    p_value: float
    unmatched: int = 0
    cluster_interval: Interval | None = None  # resampling clusters of items (e.g. a problem across seeds)

    @property
    def diff(self) -> float:
        return (self.a_only - self.b_only) / self.n if self.n else float("nan")

    @property
    def a_accuracy(self) -> float:
        return self.a_correct / self.n if self.n else float("nan")

    @property
    def b_accuracy(self) -> float:
        return self.b_correct / self.n if self.n else float("nan")


@dataclass(frozen=True)
class SeedSpread:
    """One number over training seeds: mean, sample standard deviation (n - 1; 0 for one seed), min, max."""

    n: int
    mean: float
    sd: float
    min: float
    max: float


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")


def _z(level: float) -> float:
    _check_level(level)
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(k: int, n: int, level: float = DEFAULT_LEVEL) -> Interval:
    """Wilson score interval for k successes in n trials (Newcombe 1998, Stat. Med. 17:857, method 3).

    (2k + z^2 +- z sqrt(z^2 + 4k(n - k)/n)) / (2(n + z^2)). For n = 0 the interval is the whole [0, 1]."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Interval(0.0, 1.0, level, "wilson")
    z = _z(level)
    z2 = z * z
    centre = 2 * k + z2
    half = z * sqrt(z2 + 4 * k * (n - k) / n)
    denom = 2 * (n + z2)
    low = 0.0 if k == 0 else (centre - half) / denom
    high = 1.0 if k == n else (centre + half) / denom
    return Interval(low, high, level, "wilson")


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 1000) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement, same size) of `values`.

    Drawing n items with replacement is drawing multinomial counts over the distinct values, so for outcomes with
    few distinct values (0/1 accuracy, -1/0/1 paired differences) the means come from `rng.multinomial` in
    O(n_boot) instead of O(n_boot * n): the same distribution, 10 000 resamples of 1 500 pairs in milliseconds.
    Otherwise the indices are drawn in chunks to bound memory."""
    n = len(values)
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) <= 16:
        return rng.multinomial(n, counts / n, size=n_boot) @ distinct / n
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))
        out[start : start + size] = values[idx].mean(axis=1)
    return out


def _percentile(means: np.ndarray, level: float, method: str) -> Interval:
    alpha = 1 - level
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(low), float(high), level, method)


def bootstrap_interval(
    outcomes: Sequence[float] | np.ndarray,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int | np.random.Generator = 0,
) -> Interval:
    """Percentile bootstrap interval of the mean of per-item outcomes (0/1 for accuracy, or any score)."""
    _check_level(level)
    values = np.asarray(outcomes, dtype=np.float64)
    if values.size == 0:
        return Interval(0.0, 1.0, level, "bootstrap")
    return _percentile(_bootstrap_means(values, n_boot, _rng(seed)), level, "bootstrap")


def accuracy(
    outcomes: Sequence[bool],
    method: IntervalMethod = "wilson",
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int | np.random.Generator = 0,
) -> Proportion:
    """Accuracy of per-item outcomes with a Wilson (default) or percentile-bootstrap interval."""
    k, n = sum(bool(x) for x in outcomes), len(outcomes)
    if method == "wilson":
        return Proportion(k, n, wilson_interval(k, n, level))
    if method == "bootstrap":
        return Proportion(k, n, bootstrap_interval([float(bool(x)) for x in outcomes], level, n_boot, seed))
    raise ValueError(f"unknown interval method {method!r} (wilson | bootstrap)")


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: 2 * P(X <= min(b, c)) for X ~ Bin(b + c, 1/2), capped at 1.

    b and c are the discordant counts (A right and B wrong; B right and A wrong). Exact rational arithmetic until
    the final division. With no discordant pairs there is no evidence either way: p = 1."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap_interval(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int | np.random.Generator = 0,
    clusters: Sequence[Hashable] | None = None,
) -> Interval:
    """Percentile bootstrap interval of mean(a - b), resampling the pairs (a[i], b[i]) together.

    With `clusters` (one label per pair), whole clusters are resampled and the statistic is the pooled mean
    sum(d in drawn clusters) / (number of pairs in them): the cluster bootstrap for correlated pairs."""
    _check_level(level)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.shape} and {y.shape}")
    if x.size == 0:
        return Interval(-1.0, 1.0, level, "paired bootstrap")
    if clusters is None:
        return _percentile(_bootstrap_means(x - y, n_boot, _rng(seed)), level, "paired bootstrap")
    if len(clusters) != x.size:
        raise ValueError(f"need one cluster label per pair, got {len(clusters)} for {x.size}")
    index = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    labels = np.array([index[c] for c in clusters])
    sums = np.bincount(labels, weights=x - y, minlength=len(index))
    sizes = np.bincount(labels, minlength=len(index)).astype(np.float64)
    rng, n = _rng(seed), len(index)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, 1000):
        size = min(1000, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))
        means[start : start + size] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    return _percentile(means, level, "paired cluster bootstrap")


def compare_paired(
    a: Mapping[Hashable, bool],
    b: Mapping[Hashable, bool],
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int | np.random.Generator = 0,
    cluster: Callable[[Hashable], Hashable] | None = None,
) -> PairedComparison:
    """Model A against model B on the items both were graded on (keys: problem id, or (seed, problem id)).

    Items are joined by key in sorted order (so the bootstrap does not depend on dict order); keys in only one
    map are counted in `unmatched` and otherwise ignored. With `cluster` (key -> cluster label, e.g. the problem
    id of a (seed, problem id) key), `cluster_interval` is also computed, by the cluster bootstrap."""
    keys = sorted(set(a) & set(b), key=repr)
    unmatched = len(set(a) ^ set(b))
    xa = [bool(a[k]) for k in keys]
    xb = [bool(b[k]) for k in keys]
    a_only = sum(1 for p, q in zip(xa, xb, strict=True) if p and not q)
    b_only = sum(1 for p, q in zip(xa, xb, strict=True) if q and not p)
    return PairedComparison(
        n=len(keys),
        a_correct=sum(xa),
        b_correct=sum(xb),
        a_only=a_only,
        b_only=b_only,
        interval=paired_bootstrap_interval(xa, xb, level, n_boot, seed),
        p_value=mcnemar_exact(a_only, b_only),
        unmatched=unmatched,
        cluster_interval=None if cluster is None else paired_bootstrap_interval(
            xa, xb, level, n_boot, seed, clusters=[cluster(k) for k in keys]
        ),
    )


def across_seeds(values: Sequence[float]) -> SeedSpread:
    """Mean and spread of one number (an accuracy, a difference) over training seeds."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("across_seeds needs at least one value")
    mu = sum(xs) / len(xs)
    sd = sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return SeedSpread(len(xs), mu, sd, min(xs), max(xs))


def constant_guess(labels: Sequence[Hashable]) -> tuple[Hashable, int]:
    """The best constant answer for these true labels and how many it gets right: the most frequent label (ties:
    the smallest, so the choice is reproducible). It is chosen on the same labels it is scored on, so it is an
    upper bound on any constant guesser: a model that beats it names more than the commonest answer."""
    if not labels:
        raise ValueError("constant_guess needs at least one label")
    counts = Counter(labels)
    try:
        best = min(counts, key=lambda x: (-counts[x], x))  # type: ignore[operator]
    except TypeError:  # labels of mixed, unorderable types: order ties by their text
        best = min(counts, key=lambda x: (-counts[x], str(x)))
    return best, counts[best]


def format_p(p: float) -> str:
    """A p-value for a table: 3 significant digits, '<0.0001' below that."""
    if p != p:  # NaN
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.3g}"
