"""Private quantiles (dp_ops.quantiles): the exponential mechanism sampled exactly, its epsilon
audited, each with a control that must fail."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from dp_ops.audit import epsilon_lower_bound
from dp_ops.errors import InternalError
from dp_ops.keyed_stream import KeyedStreams, new_key
from dp_ops.quantiles import (
    exponential_mechanism,
    geometric_candidates,
    private_quantile,
    quantile_utilities,
)

ALPHA = 1e-6


def streams(n: int, key: bytes | None = None, seed: int | None = None) -> KeyedStreams:
    ids = np.random.default_rng(seed).integers(0, 2**63, size=(n, 2), dtype=np.uint64)
    return KeyedStreams(key or new_key(), ids)


def _pmf(utilities: list[int], epsilon: float, sensitivity: int) -> np.ndarray:
    w = np.exp(epsilon * np.array(utilities, dtype=float) / (2 * sensitivity))
    return np.asarray(w / w.sum())


def _chi2_p(draws: np.ndarray, pmf: np.ndarray) -> float:
    observed = np.bincount(draws, minlength=len(pmf))
    expected = pmf * len(draws)
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp).pvalue)


def test_draws_follow_the_exact_distribution_and_a_doubled_epsilon_is_rejected() -> None:
    utilities, sensitivity, eps = [0, -1, -2, -3, -5, -8, -13, -40], 2, Fraction(3, 2)
    pmf = _pmf(utilities, float(eps), sensitivity)
    good = exponential_mechanism(streams(200_000), utilities, eps, sensitivity)
    assert _chi2_p(good, pmf) > ALPHA
    bad = exponential_mechanism(streams(200_000), utilities, 2 * eps, sensitivity)  # planted bug
    assert _chi2_p(bad, pmf) < ALPHA


def test_the_mechanism_is_epsilon_dp_and_a_doubled_epsilon_is_caught() -> None:
    """Neighbouring utilities (each moved by at most the sensitivity) in the worst direction: the
    first candidate up, all 49 others down. The audit's bound must stay below epsilon; the
    mechanism run with twice its epsilon (a missing factor 2) must exceed it."""
    sensitivity, eps, n = 3, Fraction(1), 400_000
    b = [0] * 50
    a = [sensitivity] + [-sensitivity] * 49

    def first(utilities: list[int], epsilon: Fraction) -> np.ndarray:
        drawn = exponential_mechanism(streams(n), utilities, epsilon, sensitivity)
        return (drawn == 0).astype(float)

    assert epsilon_lower_bound(first(a, eps), first(b, eps), [0.5]) <= float(eps)
    bug = epsilon_lower_bound(first(a, 2 * eps), first(b, 2 * eps), [0.5])
    assert bug > float(eps)


@pytest.mark.parametrize("q", [Fraction(1, 2), Fraction(1, 10), Fraction(95, 100)])
def test_quantile_utilities_move_by_at_most_their_sensitivity_which_is_tight(q: Fraction) -> None:
    rng = np.random.default_rng(11)
    candidates = list(range(20))
    _, sensitivity = quantile_utilities([0], 1, q)
    largest = 0
    for _ in range(300):
        values = rng.integers(0, 25, size=int(rng.integers(0, 30)))
        extra = int(rng.integers(0, 25))
        before, _ = quantile_utilities(
            [int((values <= c).sum()) for c in candidates], len(values), q
        )
        grown = np.append(values, extra)
        after, _ = quantile_utilities([int((grown <= c).sum()) for c in candidates], len(grown), q)
        largest = max(largest, *(abs(x - y) for x, y in zip(before, after, strict=True)))
    assert largest == sensitivity  # never more, and reached: a smaller claim would be wrong


def test_a_private_upper_bound_lands_within_a_factor_two_of_the_quantile() -> None:
    rng = np.random.default_rng(5)
    per_unit = rng.lognormal(mean=10, sigma=1, size=10_000)  # each unit's largest value
    candidates = geometric_candidates(1.0)
    counts = [int((per_unit <= c).sum()) for c in candidates]
    q = Fraction(95, 100)
    chosen = private_quantile(streams(1000), candidates, counts, len(per_unit), q, Fraction(1, 2))
    true = float(np.quantile(per_unit, 0.95))
    within = (chosen >= true / 2) & (chosen <= 2 * true)
    assert within.mean() >= 0.99
    assert math.isclose(float(np.median(chosen)), min(c for c in candidates if c >= true))


def test_the_same_key_and_streams_draw_the_same_bound() -> None:
    key = new_key()
    utilities = [0, -3, -1, -7]
    first = exponential_mechanism(streams(50, key, seed=1), utilities, Fraction(1, 3), 1)
    again = exponential_mechanism(streams(50, key, seed=1), utilities, Fraction(1, 3), 1)
    assert (first == again).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda: quantile_utilities([1, 2], 3, Fraction(1)),
        lambda: private_quantile(streams(1), [2.0, 1.0], [1, 2], 2, Fraction(1, 2), Fraction(1)),
        lambda: exponential_mechanism(streams(1), [], Fraction(1), 1),
        lambda: exponential_mechanism(streams(1), [0], Fraction(0), 1),
    ],
)
def test_bad_arguments_are_internal_errors(call: object) -> None:
    with pytest.raises(InternalError):
        call()  # type: ignore[operator]
