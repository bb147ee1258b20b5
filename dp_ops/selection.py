"""Private partition selection: which partition keys found in the data may be released.

A key present in the data is only released if a noisy count of the distinct privacy units in it
clears a threshold. Each unit touches at most ``L0`` partitions, so the per-partition failure
probability is ``delta_adj = 1 - (1 - delta)^(1/L0)`` and the union over a unit's partitions is
``delta``. ``pre_threshold`` (P) never releases partitions with fewer than P units and otherwise
behaves as if the count were ``n - P + 1``; it costs no budget.

Three mechanisms live here: Laplace and Gaussian thresholding, and the truncated geometric
mechanism (keep with probability p(n), optimal for L0 = 1). For the first two:

* the closed-form thresholds of Google's library for continuous noise (``laplace_threshold``,
  ``gaussian_threshold``), kept as the reference and checked against its test vectors;
* the thresholds for the **integer** noise dprelease actually draws
  (``discrete_laplace_threshold``, ``discrete_gaussian_threshold``): the smallest integer T such
  that a partition holding one unit passes with probability at most ``delta_adj``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal, getcontext
from fractions import Fraction

import numpy as np

from dp_ops.errors import NoiseRangeError

SQRT2 = math.sqrt(2.0)


def adjusted_delta(delta: float, max_partitions: int) -> float:
    """Per-partition delta so that a unit's ``max_partitions`` partitions together spend delta."""
    return -math.expm1(math.log1p(-delta) / max_partitions)


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / SQRT2)


def normal_ppf(p: float) -> float:
    """Inverse of the standard normal CDF by bisection (enough for threshold formulas)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if normal_cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def laplace_threshold(
    epsilon: float, delta: float, max_partitions: int, pre_threshold: int = 1
) -> float:
    """Google's Laplace thresholding threshold (continuous Laplace, scale ``L0/epsilon``)."""
    scale = max_partitions / epsilon
    d = adjusted_delta(delta, max_partitions)
    t = 1 - scale * math.log(2 * d) if d <= 0.5 else 1 + scale * math.log(2 * (1 - d))
    return t + (pre_threshold - 1)


def analytic_gaussian_sigma(epsilon: float, delta: float, l2_sensitivity: float) -> float:
    """Smallest sigma of the analytic Gaussian mechanism (Balle & Wang 2018, Thm. 8).

    Exponential search then bisection to relative accuracy 1e-3, returning the upper bracket, as
    Google's ``CalculateGaussianStddev`` does.
    """

    def delta_of(sigma: float) -> float:
        a = l2_sensitivity / (2 * sigma)
        b = epsilon * sigma / l2_sensitivity
        return normal_cdf(a - b) - math.exp(epsilon) * normal_cdf(-a - b)

    lo, hi = 0.0, l2_sensitivity
    while delta_of(hi) > delta:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-3 * lo:
        mid = (lo + hi) / 2
        if delta_of(mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def gaussian_threshold(
    epsilon: float, delta: float, max_partitions: int, pre_threshold: int = 1
) -> float:
    """Google's Gaussian thresholding threshold: half of delta for the noise, half for the tail."""
    delta_threshold = delta / 2
    sigma = analytic_gaussian_sigma(epsilon, delta - delta_threshold, math.sqrt(max_partitions))
    d = adjusted_delta(delta_threshold, max_partitions)
    return 1 - sigma * normal_ppf(d) + (pre_threshold - 1)


def discrete_laplace_tail(scale: Fraction, k: int) -> float:
    """P(Z >= k) for discrete Laplace Z with the given scale and k >= 1: ``q^k / (1 + q)``."""
    q = math.exp(-1 / float(scale))
    return q**k / (1 + q)


def discrete_laplace_threshold(scale: Fraction, delta_adj: float) -> int:
    """Smallest integer T with P(1 + Z >= T) <= delta_adj for discrete Laplace noise Z."""
    q = math.exp(-1 / float(scale))
    k = max(1, math.ceil(math.log(delta_adj * (1 + q)) / math.log(q)))
    while discrete_laplace_tail(scale, k) > delta_adj:
        k += 1
    while k > 1 and discrete_laplace_tail(scale, k - 1) <= delta_adj:
        k -= 1
    return k + 1


def discrete_gaussian_tail_bound(variance: Fraction, k: int) -> float:
    """An upper bound on P(Z >= k), k >= 0, for the discrete Gaussian with sigma^2 = variance.

    The sum of the decreasing terms from k on is at most the first term plus the integral, and
    the normalizer is at least ``sigma sqrt(2 pi)`` (Poisson summation), so
    ``P(Z >= k) <= Q(k/sigma) + exp(-k^2/(2 sigma^2)) / (sigma sqrt(2 pi))``.
    """
    sigma = math.sqrt(float(variance))
    return (
        1
        - normal_cdf(k / sigma)
        + math.exp(-(k * k) / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))
    )


def discrete_gaussian_threshold(variance: Fraction, delta_adj: float) -> int:
    """Smallest integer T with (a bound on) P(1 + Z >= T) <= delta_adj for discrete Gaussian Z."""
    sigma = math.sqrt(float(variance))
    k = max(0, math.floor(-sigma * normal_ppf(delta_adj)) - 2)
    while discrete_gaussian_tail_bound(variance, k) > delta_adj:
        k += 1
    return k + 1


# --------------------------------------------------------------------------------------------
# Truncated geometric ("near-optimal") partition selection, Desfontaines et al. (PoPETs 2022).

TG_ROUNDING_SLACK = 2.0**-120
"""Keep probabilities are stored as 128-bit fractions (error < 2^-128 each); the mechanism is built
with delta_adj reduced by this slack so the rounded mechanism still meets the declared delta."""


def _tg_parameters(
    epsilon: float, delta: float, max_partitions: int, pre_threshold: int
) -> tuple[Decimal, Decimal, int, Decimal]:
    getcontext().prec = 60
    eps = Decimal(epsilon) / max_partitions
    d = Decimal(adjusted_delta(delta, max_partitions)) - Decimal(TG_ROUNDING_SLACK)
    em1 = eps.exp() - 1
    tanh = ((eps / 2).exp() - (-eps / 2).exp()) / ((eps / 2).exp() + (-eps / 2).exp())
    c1 = pre_threshold + int(((1 + tanh * (1 / d - 1)).ln() / eps).to_integral_value(ROUND_FLOOR))
    return eps, d, c1, em1


TG_MAX_ENTRIES = 1 << 16
"""The most keep probabilities a truncated geometric table may hold (they are computed on the
driver and shipped to every task); bounds that need more use threshold selection."""


def truncated_geometric_probabilities(
    epsilon: float, delta: float, max_partitions: int, pre_threshold: int = 1
) -> list[Decimal]:
    """Keep probability p(n) for n = 0, 1, ..., c2 + 1 (p = 1 beyond), to 60 significant digits.

    NoiseRangeError when the table would hold more than :data:`TG_MAX_ENTRIES` entries.
    """
    eps, d, c1, em1 = _tg_parameters(epsilon, delta, max_partitions, pre_threshold)

    def lower(n: int) -> Decimal:
        return d * ((eps * (n - pre_threshold + 1)).exp() - 1) / em1

    if c1 + 2 > TG_MAX_ENTRIES:
        raise NoiseRangeError(f"a truncated geometric table of over {TG_MAX_ENTRIES} entries")
    p_c1 = lower(c1)
    c2 = c1 + int(((1 + em1 / d * (1 - p_c1)).ln() / eps).to_integral_value(ROUND_FLOOR))
    if c2 + 2 > TG_MAX_ENTRIES:
        raise NoiseRangeError(f"a truncated geometric table of over {TG_MAX_ENTRIES} entries")
    probs: list[Decimal] = []
    for n in range(c2 + 2):
        if n < pre_threshold:
            p = Decimal(0)
        elif n <= c1:
            p = lower(n)
        elif n <= c2:
            p = p_c1 + (1 - p_c1 + d / em1) * (1 - (-(eps * (n - c1))).exp())
        else:
            p = Decimal(1)
        probs.append(min(Decimal(1), max(Decimal(0), p)))
    return probs


def truncated_geometric_c1(
    epsilon: float, delta: float, max_partitions: int, pre_threshold: int = 1
) -> int:
    return _tg_parameters(epsilon, delta, max_partitions, pre_threshold)[2]


def fixed_point_128(probs: Sequence[Decimal]) -> tuple[np.ndarray, np.ndarray]:
    """floor(p * 2^128) of each probability as (high, low) uint64 words; p = 1 maps to all ones."""
    top = (1 << 128) - 1
    values = [min(top, int(p * (1 << 128))) for p in probs]
    hi = np.array([v >> 64 for v in values], dtype=np.uint64)
    lo = np.array([v & ((1 << 64) - 1) for v in values], dtype=np.uint64)
    return hi, lo
