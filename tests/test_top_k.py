"""The most common categories of a cell (dp_ops.top_k): exact distribution of the peeled
exponential mechanism, its epsilon audited on neighbouring counts, the probability bound the
manifest states, each with a control that must fail."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from dp_ops.audit import epsilon_lower_bound
from dp_ops.errors import InternalError
from dp_ops.top_k import gap_for, probability_first_is_best, top_k
from tests.test_quantiles import ALPHA, _chi2_p, streams


def _rows(counts: list[int], n: int) -> np.ndarray:
    return np.tile(np.array(counts, dtype=np.int64), (n, 1))


def _weights(counts: list[int], epsilon: float, sensitivity: int) -> np.ndarray:
    return np.exp(epsilon * np.array(counts, dtype=float) / sensitivity)


def test_one_pick_follows_the_exact_distribution_and_a_doubled_epsilon_is_rejected() -> None:
    counts, s, eps = [9, 7, 7, 3, 0], 2, Fraction(3, 4)
    w = _weights(counts, float(eps), s)
    pmf = w / w.sum()
    good = top_k(streams(200_000), _rows(counts, 200_000), 1, eps, s)[:, 0]
    assert _chi2_p(good, pmf) > ALPHA
    bad = top_k(streams(200_000), _rows(counts, 200_000), 1, 2 * eps, s)[:, 0]  # planted bug
    assert _chi2_p(bad, pmf) < ALPHA


def test_the_top_two_follow_the_exact_distribution_of_two_peeled_picks() -> None:
    counts, s, eps = [6, 4, 1, 0], 1, Fraction(1)
    each = float(eps) / 2
    w = _weights(counts, each, s)
    pairs = list(itertools.permutations(range(4), 2))
    pmf = np.array([w[i] / w.sum() * w[j] / (w.sum() - w[i]) for i, j in pairs])
    n = 200_000
    picks = top_k(streams(n), _rows(counts, n), 2, eps, s)
    assert (picks[:, 0] != picks[:, 1]).all()
    code = {p: i for i, p in enumerate(pairs)}
    draws = np.array([code[(int(a), int(b))] for a, b in picks])
    assert _chi2_p(draws, pmf) > ALPHA
    wrong = top_k(streams(n), _rows(counts, n), 2, 2 * eps, s)  # control: epsilon not split
    assert _chi2_p(np.array([code[(int(a), int(b))] for a, b in wrong]), pmf) < ALPHA


def test_each_row_uses_its_own_counts_and_stream() -> None:
    counts = np.array([[0, 50, 0], [50, 0, 0], [0, 0, 50]], dtype=np.int64)
    picks = top_k(streams(3), counts, 1, Fraction(1), 1)[:, 0]
    assert picks.tolist() == [1, 0, 2]  # a lead of 50 at epsilon 1: e^-50 odds against
    key = b"k" * 32
    a = top_k(streams(3, key, seed=1), counts, 3, Fraction(1), 1)
    b = top_k(streams(3, key, seed=1), counts, 3, Fraction(1), 1)
    assert (a == b).all()  # the same streams give the same picks


def test_the_mode_is_epsilon_dp_in_the_units_and_a_doubled_epsilon_is_caught() -> None:
    """Neighbouring cells: one unit more adds ``sensitivity`` rows to the second category (all
    counts move the same way). The audit's bound stays below epsilon; the mechanism with twice
    its epsilon exceeds it."""
    s, eps, n = 3, Fraction(1), 400_000
    base = [3, 3, 3, 3]
    extra = [3, 3 + s, 3, 3]
    for e, must_exceed in ((eps, False), (2 * eps, True)):
        a = (top_k(streams(n), _rows(extra, n), 1, e, s)[:, 0] == 1).astype(float)
        b = (top_k(streams(n), _rows(base, n), 1, e, s)[:, 0] == 1).astype(float)
        bound = epsilon_lower_bound(a, b, [0.5], ALPHA)
        assert (bound > eps) if must_exceed else (bound <= eps), (e, bound)


def test_the_stated_probability_of_returning_the_mode_is_a_lower_bound() -> None:
    s, m, eps = 1, 5, 0.5
    gap = gap_for(0.9, m, eps, s)
    assert probability_first_is_best(m, gap, eps, s) == pytest.approx(0.9)
    counts = [int(np.ceil(gap)), 0, 0, 0, 0]
    n = 100_000
    hit = np.mean(top_k(streams(n), _rows(counts, n), 1, Fraction(1, 2), s)[:, 0] == 0)
    assert hit >= 0.9 - 4 * np.sqrt(0.09 / n)
    # control: a gap a fifth as large does not reach the stated probability
    small = [int(gap / 5), 0, 0, 0, 0]
    miss = np.mean(top_k(streams(n), _rows(small, n), 1, Fraction(1, 2), s)[:, 0] == 0)
    assert miss < 0.9


def test_bad_arguments_are_internal_errors() -> None:
    with pytest.raises(InternalError):
        top_k(streams(2), np.zeros((2, 3), dtype=np.int64), 4, Fraction(1), 1)
    with pytest.raises(InternalError):
        top_k(streams(2), np.zeros((3, 3), dtype=np.int64), 1, Fraction(1), 1)
