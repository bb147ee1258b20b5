"""Privacy accounting: budget splits in exact rationals and rho-zCDP <-> (epsilon, delta).

Conventions: every conversion errs on the safe side. A split never hands out more than the total
(exact :class:`fractions.Fraction` arithmetic); a converted epsilon is an upper bracket; a rho
granted for an (epsilon, delta) target is a lower bracket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction


def split(total: Fraction, weights: Sequence[float | Fraction]) -> list[Fraction]:
    """Split ``total`` in proportion to ``weights`` exactly; the parts sum to ``total``."""
    exact = [Fraction(w) for w in weights]
    if not exact or any(w <= 0 for w in exact):
        raise ValueError("budget weights must be positive")
    whole = sum(exact, Fraction(0))
    return [total * w / whole for w in exact]


def _golden_min(f: Callable[[float], float], lo: float, hi: float, steps: int = 150) -> float:
    """The smallest value of ``f`` found by golden-section search on ``[lo, hi]``."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(steps):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return min(fa, fb)


def _log_delta(rho: float, epsilon: float, alpha: float) -> float:
    # CKS20 Corollary 13: delta <= exp((a-1)(a rho - eps)) / (a-1) * (1 - 1/a)^a for any a > 1.
    return (
        (alpha - 1) * (alpha * rho - epsilon) - math.log(alpha - 1) + alpha * math.log1p(-1 / alpha)
    )


def zcdp_delta(rho: float, epsilon: float) -> float:
    """The delta at which rho-zCDP implies (epsilon, delta)-DP (Canonne-Kamath-Steinke Cor. 13).

    Any alpha > 1 gives a valid bound; a golden-section search over log(alpha - 1) finds the
    smallest one, so an imperfect search can only report a larger (still valid) delta.
    """
    if rho <= 0:
        return 0.0
    best = _golden_min(lambda x: _log_delta(rho, epsilon, 1 + math.exp(x)), -30.0, 30.0, 200)
    return min(1.0, math.exp(best))


def _epsilon_at(rho: float, log_inv_delta: float, alpha: float) -> float:
    # Cor. 13 solved for epsilon at a fixed alpha > 1 (valid for every alpha).
    return alpha * rho + (alpha * math.log1p(-1 / alpha) - math.log(alpha - 1) + log_inv_delta) / (
        alpha - 1
    )


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The epsilon with rho-zCDP => (epsilon, delta)-DP (Canonne-Kamath-Steinke Cor. 13).

    Minimizes the closed-form epsilon(alpha) over alpha > 1 by golden-section search on
    log(alpha - 1). Every alpha gives a valid epsilon, so the search can only err on the safe side.
    """
    if rho <= 0:
        return 0.0
    if not 0 < delta < 1:
        raise ValueError("delta must lie in (0, 1) to convert zCDP to (epsilon, delta)-DP")
    log_inv_delta = -math.log(delta)
    best = _golden_min(lambda x: _epsilon_at(rho, log_inv_delta, 1 + math.exp(x)), -30.0, 30.0)
    simple = rho + 2 * math.sqrt(rho * log_inv_delta)  # Bun-Steinke bound, also valid
    return min(best, simple)


def zcdp_rho(epsilon: float, delta: float) -> Fraction:
    """The largest rho (lower bracket, exact rational) whose conversion fits in (epsilon, delta)."""
    if epsilon <= 0 or not 0 < delta < 1:
        raise ValueError("need epsilon > 0 and 0 < delta < 1")
    lo, hi = 0.0, epsilon
    for _ in range(80):
        mid = (lo + hi) / 2
        if zcdp_epsilon(mid, delta) <= epsilon:
            lo = mid
        else:
            hi = mid
    rho = Fraction(lo).limit_denominator(1 << 40)
    while zcdp_epsilon(float(rho), delta) > epsilon:  # limit_denominator may round up
        rho -= Fraction(1, 1 << 40)
    return rho


def epsilon_for_rho(rho: Fraction, bits: int = 40) -> Fraction:
    """The largest multiple of ``2^-bits`` with ``epsilon^2 / 2 <= rho``.

    A pure epsilon-DP mechanism is ``epsilon^2 / 2``-zCDP (Bun-Steinke 2016, Prop. 1.4), so a
    Laplace measurement at this epsilon fits in ``rho``.
    """
    if rho <= 0:
        raise ValueError("rho must be positive")
    scale = 1 << bits
    return Fraction(math.isqrt(math.floor(2 * rho * scale * scale)), scale)
