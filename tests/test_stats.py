"""The statistics against published values and hand computations, and the bootstrap's determinism and shape."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from supercorrect import stats


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of seven
        # methods", Stat. Med. 17:857-872, Table I, method 3 (Wilson score, no continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_wilson_matches_newcombe_1998(k, n, low, high):
    iv = stats.wilson_interval(k, n)
    assert (round(iv.low, 4), round(iv.high, 4)) == (low, high)
    assert iv.contains(k / n) and iv.method == "wilson" and iv.level == 0.95


def test_wilson_edges_and_level():
    assert stats.wilson_interval(0, 0) == stats.Interval(0.0, 1.0, 0.95, "wilson")
    wide, narrow = stats.wilson_interval(30, 100, 0.99), stats.wilson_interval(30, 100, 0.90)
    assert wide.low < narrow.low < 0.3 < narrow.high < wide.high
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 4)
    with pytest.raises(ValueError):
        stats.wilson_interval(1, 4, level=1.0)


def test_mcnemar_exact_published_example():
    # Fagerland, Lydersen & Laake (2013), BMC Med. Res. Methodol. 13:91, Table 1 (Bentur et al. 2009, airway
    # hyper-responsiveness before/after stem cell transplantation, 21 children): discordant pairs 1 and 7;
    # the paper's McNemar exact conditional p-value is 0.070.
    # By hand: 2 * (C(8,0) + C(8,1)) / 2^8 = 2 * 9 / 256 = 0.0703125.
    assert stats.mcnemar_exact(1, 7) == pytest.approx(0.0703125, abs=1e-15)
    assert round(stats.mcnemar_exact(7, 1), 3) == 0.070  # symmetric


def test_mcnemar_exact_by_hand():
    # b=10, c=2: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * (1 + 12 + 66) / 4096 = 158/4096.
    assert stats.mcnemar_exact(10, 2) == pytest.approx(158 / 4096, abs=1e-15)
    # 0 vs 6: 2 / 64; equal counts and no discordant pairs: 1.
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert stats.mcnemar_exact(4, 4) == 1.0 and stats.mcnemar_exact(0, 0) == 1.0
    # Large counts stay exact (integer arithmetic) and tiny.
    p = stats.mcnemar_exact(40, 400)
    assert 0 < p < 1e-60
    assert p == pytest.approx(2 * sum(comb(440, i) for i in range(41)) / 2**440, rel=1e-12)
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 2)


def test_mcnemar_agrees_with_scipy_when_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    for b in range(0, 15):
        for c in range(0, 15):
            if b + c:
                ref = scipy_stats.binomtest(b, b + c, 0.5).pvalue
                assert stats.mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9), (b, c)


A = [1, 1, 0, 1, 0, 1, 1, 0, 1, 1] * 3  # 21/30
B = [1, 0, 0, 1, 0, 0, 1, 0, 1, 0] * 3  # 12/30: A alone right on 9, B alone right on 0


def test_paired_bootstrap_fixed_seed_values():
    # Deterministic for a fixed seed (numpy PCG64, multinomial draws over the distinct differences); values
    # recorded from this implementation and checked to be plausible: the observed difference is 0.3 and the normal
    # approximation gives 0.3 +- 1.96*sqrt(.21/30) = [0.136, 0.464].
    iv = stats.paired_bootstrap_interval(A, B, n_boot=2000, seed=0)
    assert (iv.low, iv.high) == pytest.approx((0.13333333333333333, 0.4666666666666667), abs=1e-12)
    assert iv == stats.paired_bootstrap_interval(A, B, n_boot=2000, seed=0)
    assert iv.contains(0.3) and iv.method == "paired bootstrap"


def test_paired_bootstrap_properties():
    rng = np.random.default_rng(1)
    for _ in range(5):
        n = int(rng.integers(5, 60))
        a = rng.integers(0, 2, n)
        b = np.where(rng.random(n) < 0.8, a, 1 - a)
        iv = stats.paired_bootstrap_interval(a, b, n_boot=500, seed=int(rng.integers(1000)))
        assert iv.contains(float(np.mean(a - b)))
    # Identical models: every resample has difference 0, the interval has zero width.
    same = stats.paired_bootstrap_interval(A, A, n_boot=300, seed=3)
    assert (same.low, same.high) == (0.0, 0.0)
    # Larger samples: close to the normal approximation of the paired difference.
    a = np.array([1] * 300 + [0] * 700)  # right on items 0-299
    b = np.array([0] * 100 + [1] * 250 + [0] * 650)  # right on 100-349: A alone on 100, B alone on 50
    d = a - b
    se = d.std() / np.sqrt(len(d))
    iv = stats.paired_bootstrap_interval(a, b, n_boot=4000, seed=0)
    assert iv.low == pytest.approx(d.mean() - 1.96 * se, abs=0.01)
    assert iv.high == pytest.approx(d.mean() + 1.96 * se, abs=0.01)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_interval([1, 0], [1])


def test_cluster_bootstrap():
    # k identical copies of each pair, clustered by pair: the same draws (J = n clusters) and the same means as the
    # cluster bootstrap of one copy with one pair per cluster, which is the plain paired bootstrap (up to how the
    # draws are made); unclustered, the k copies pretend to be k times the data (narrower).
    k = 3
    copies_a, copies_b = [x for x in A for _ in range(k)], [x for x in B for _ in range(k)]
    labels = [i for i in range(len(A)) for _ in range(k)]
    one = stats.paired_bootstrap_interval(A, B, n_boot=2000, seed=0, clusters=list(range(len(A))))
    clustered = stats.paired_bootstrap_interval(copies_a, copies_b, n_boot=2000, seed=0, clusters=labels)
    assert (clustered.low, clustered.high) == pytest.approx((one.low, one.high), abs=1e-12)
    assert clustered.method == "paired cluster bootstrap"
    plain = stats.paired_bootstrap_interval(A, B, n_boot=2000, seed=0)
    assert (plain.low, plain.high) == pytest.approx((one.low, one.high), abs=0.04)
    stacked = stats.paired_bootstrap_interval(copies_a, copies_b, n_boot=2000, seed=0)
    assert stacked.width < 0.75 * clustered.width  # about 1/sqrt(3)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_interval(A, B, clusters=[0, 1])
    # Through compare_paired: keys (seed, problem), clustered by problem.
    a = {(s, i): bool(x) for s in range(k) for i, x in enumerate(A)}
    b = {(s, i): bool(x) for s in range(k) for i, x in enumerate(B)}
    pc = stats.compare_paired(a, b, n_boot=2000, seed=0, cluster=lambda key: key[1])
    assert pc.n == 90 and pc.cluster_interval is not None and pc.cluster_interval.width > pc.interval.width
    assert stats.compare_paired(a, b, n_boot=200).cluster_interval is None


def test_bootstrap_accuracy_option_close_to_wilson():
    outcomes = [True] * 81 + [False] * (263 - 81)
    boot = stats.accuracy(outcomes, "bootstrap", n_boot=4000, seed=0)
    wil = stats.accuracy(outcomes)
    assert boot.k == wil.k == 81 and boot.n == 263 and boot.estimate == pytest.approx(81 / 263)
    assert boot.interval.method == "bootstrap"
    assert boot.interval.low == pytest.approx(wil.interval.low, abs=0.01)
    assert boot.interval.high == pytest.approx(wil.interval.high, abs=0.01)
    assert boot.interval == stats.accuracy(outcomes, "bootstrap", n_boot=4000, seed=0).interval
    with pytest.raises(ValueError):
        stats.accuracy(outcomes, "wald")  # type: ignore[arg-type]


def test_compare_paired_joins_on_keys():
    a = {f"p{i}": bool(x) for i, x in enumerate(A)}
    b = {f"p{i}": bool(x) for i, x in enumerate(B)}
    b["extra"] = True  # only in B: left out and counted
    pc = stats.compare_paired(a, b, n_boot=2000, seed=0)
    assert (pc.n, pc.a_correct, pc.b_correct, pc.a_only, pc.b_only, pc.unmatched) == (30, 21, 12, 9, 0, 1)
    assert pc.diff == pytest.approx(0.3)
    assert pc.p_value == pytest.approx(2 / 2**9)  # b=9, c=0
    assert pc.interval.contains(pc.diff)
    # Insertion order does not change the result (keys are sorted before resampling).
    shuffled = dict(reversed(list(a.items())))
    assert stats.compare_paired(shuffled, b, n_boot=2000, seed=0) == pc


def test_across_seeds():
    s = stats.across_seeds([0.30, 0.36, 0.33])
    assert (s.n, s.min, s.max) == (3, 0.30, 0.36)
    assert s.mean == pytest.approx(0.33)
    assert s.sd == pytest.approx(0.03)  # sample sd: sqrt((0.0009 + 0.0009 + 0) / 2)
    assert stats.across_seeds([0.5]).sd == 0.0
    with pytest.raises(ValueError):
        stats.across_seeds([])


def test_constant_guess():
    """The chance baseline of error location: the commonest step and how often it is right; ties go to the
    smallest step, so the same rows always give the same baseline."""
    assert stats.constant_guess([2, 1, 2, 3, 2, 1]) == (2, 3)
    assert stats.constant_guess([3, 1, 3, 1]) == (1, 2)
    assert stats.constant_guess([10, 2, 10, 2]) == (2, 2)  # by value, not by text ("10" < "2")
    assert stats.constant_guess(["b", 1, "b"]) == ("b", 2)
    with pytest.raises(ValueError):
        stats.constant_guess([])


def test_format_p():
    assert stats.format_p(0.0703125) == "0.0703"
    assert stats.format_p(1e-9) == "<0.0001"
    assert stats.format_p(1.0) == "1"
