"""Audit statistics: Clopper-Pearson bounds and an empirical epsilon lower bound (black box),
for ``dprelease audit`` and the test suite's audits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def cp_lower(k: int, n: int, alpha: float) -> float:
    """Clopper-Pearson lower bound of a binomial proportion (k of n), one-sided level alpha."""
    return 0.0 if k == 0 else float(stats.beta.ppf(alpha, k, n - k + 1))


def cp_upper(k: int, n: int, alpha: float) -> float:
    """Clopper-Pearson upper bound of a binomial proportion (k of n), one-sided level alpha."""
    return 1.0 if k == n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))


def epsilon_lower_bound(
    a: np.ndarray, b: np.ndarray, cuts: Sequence[float], alpha: float = 1e-6, delta: float = 0.0
) -> float:
    """Largest ln((P_a[S] - delta) / P_b[S]) certified at level alpha over S = {y >= c}, {y < c}.

    ``a`` and ``b`` are samples of a mechanism on neighbouring inputs; the events are tried in both
    directions, with a Bonferroni split of alpha. A correct (epsilon, delta)-DP mechanism gives a
    value <= epsilon except with probability alpha.
    """
    events = 4 * len(cuts)
    a_each = alpha / events / 2
    best = -math.inf
    for c in cuts:
        for x, y in ((a, b), (b, a)):
            for hit_x, hit_y in ((x >= c, y >= c), (x < c, y < c)):
                lo = cp_lower(int(hit_x.sum()), len(x), a_each) - delta
                hi = cp_upper(int(hit_y.sum()), len(y), a_each)
                if lo > 0 and hi > 0:
                    best = max(best, math.log(lo / hi))
    return best


def binomial_interval(n: int, p: float, alpha: float = 1e-6) -> tuple[float, float]:
    """The two-sided interval holding Binomial(n, p) with probability at least 1 - alpha."""
    lo, hi = stats.binom.interval(1 - alpha, n, p)
    return float(lo), float(hi)


def cuts_between(a: np.ndarray, b: np.ndarray, count: int = 24) -> list[float]:
    """Thresholds for :func:`epsilon_lower_bound`: ``count`` quantiles of the pooled samples,
    between the 5% and 95% quantiles, distinct. Choose them on samples other than those the bound is
    computed on (a pilot half), or the bound loses its level."""
    pooled = np.concatenate([a, b]).astype(float)
    probs = np.linspace(0.05, 0.95, count)
    return sorted({float(x) + 0.5 for x in np.quantile(pooled, probs, method="lower")})
