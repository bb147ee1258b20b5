"""Accuracy of the noise: standard deviations and (1 - alpha) interval half-widths.

They depend only on the mechanism's parameters, never on the data, so reporting them costs no
privacy. They describe the noise added to the *bounded* aggregate; bias from contribution
bounding and clamping is not included.
"""

from __future__ import annotations

import math
from fractions import Fraction

from dp_ops.selection import discrete_gaussian_tail_bound

EXACT_SUM_LIMIT = 200.0  # sigma up to which discrete Gaussian figures are summed term by term


def discrete_laplace_sd(scale: Fraction) -> float:
    """Standard deviation of the discrete Laplace: ``sqrt(2q)/(1-q)``, ``q = exp(-1/scale)``."""
    q = math.exp(-1 / float(scale))
    return math.sqrt(2 * q) / (-math.expm1(-1 / float(scale)))


def discrete_laplace_halfwidth(scale: Fraction, alpha: float) -> int:
    """Smallest integer h with P(|Z| > h) <= alpha: ``2 q^(h+1) / (1+q) <= alpha``."""
    q = math.exp(-1 / float(scale))
    h = max(0, math.ceil(math.log(alpha * (1 + q) / 2) / math.log(q)) - 1)
    while 2 * q ** (h + 1) / (1 + q) > alpha:
        h += 1
    while h > 0 and 2 * q**h / (1 + q) <= alpha:
        h -= 1
    return h


def discrete_laplace_coverage(scale: Fraction, h: int) -> float:
    """P(|Z| <= h) for the discrete Laplace: ``1 - 2 q^(h+1) / (1+q)``."""
    q = math.exp(-1 / float(scale))
    return 1 - 2 * q ** (h + 1) / (1 + q)


def _dgauss_pmf_terms(variance: Fraction) -> tuple[list[float], float]:
    sigma = math.sqrt(float(variance))
    top = int(40 * sigma) + 10
    terms = [math.exp(-(x * x) / (2 * float(variance))) for x in range(top + 1)]
    total = terms[0] + 2 * math.fsum(terms[1:])
    return terms, total


def discrete_gaussian_sd(variance: Fraction) -> tuple[float, bool]:
    """(standard deviation, exact?) of the discrete Gaussian with ``sigma^2 = variance``.

    Summed from the probability mass function for sigma <= 200; above that the difference from
    sigma is below ``exp(-2 pi^2 sigma^2)`` relative and sigma is returned (flagged not exact).
    """
    sigma = math.sqrt(float(variance))
    if sigma > EXACT_SUM_LIMIT:
        return sigma, False
    terms, total = _dgauss_pmf_terms(variance)
    second = 2 * math.fsum(x * x * t for x, t in enumerate(terms))
    return math.sqrt(second / total), True


def discrete_gaussian_halfwidth(variance: Fraction, alpha: float) -> tuple[int, bool]:
    """(smallest integer h with P(|Z| > h) <= alpha, exact?) for the discrete Gaussian.

    Exact from the mass function for sigma <= 200, otherwise from a tail upper bound (so the
    interval is conservative).
    """
    sigma = math.sqrt(float(variance))
    if sigma <= EXACT_SUM_LIMIT:
        terms, total = _dgauss_pmf_terms(variance)
        tail = 0.0  # P(Z > h) accumulated from the top
        tails = [0.0] * len(terms)
        for x in range(len(terms) - 1, -1, -1):
            tails[x] = tail  # P(Z > x)
            tail += terms[x] / total
        for h, t in enumerate(tails):
            if 2 * t <= alpha:
                return h, True
        return len(terms), True
    h = max(0, int(sigma * 2) - 1)
    while 2 * discrete_gaussian_tail_bound(variance, h + 1) > alpha:
        h += 1
    return h, False


def discrete_gaussian_coverage(variance: Fraction, h: int) -> tuple[float, bool]:
    """(P(|Z| <= h), exact?) for the discrete Gaussian: summed from the mass function for
    sigma <= 200; above, a lower bound from the tail bound (flagged not exact)."""
    sigma = math.sqrt(float(variance))
    if sigma <= EXACT_SUM_LIMIT:
        terms, total = _dgauss_pmf_terms(variance)
        inside = terms[0] + 2 * math.fsum(terms[1 : min(h, len(terms) - 1) + 1])
        return min(1.0, inside / total), True
    return max(0.0, 1 - 2 * discrete_gaussian_tail_bound(variance, h + 1)), False


def discrete_laplace_clamping_shift(scale: Fraction, count: int) -> float:
    """How much clamping at zero raises the expected released value of a cell whose true value
    is ``count >= 0``: ``E[max(count + Z, 0)] - count = E[(Z - count)^+]`` (Z symmetric), which
    for the discrete Laplace is ``q^(count + 1) / (1 - q^2)``. Largest for an empty cell."""
    q = math.exp(-1 / float(scale))
    return q ** (count + 1) / (-math.expm1(2 * math.log(q)))


def discrete_gaussian_clamping_shift(variance: Fraction, count: int) -> tuple[float, bool]:
    """(``E[(Z - count)^+]`` for the discrete Gaussian, exact?): summed from the mass function
    for sigma <= 200; above, the continuous Gaussian's value (flagged not exact)."""
    sigma = math.sqrt(float(variance))
    if sigma <= EXACT_SUM_LIMIT:
        terms, total = _dgauss_pmf_terms(variance)
        return math.fsum((z - count) * t for z, t in enumerate(terms) if z > count) / total, True
    u = count / sigma
    density = math.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    upper = 0.5 * math.erfc(u / math.sqrt(2))
    return sigma * density - count * upper, False
