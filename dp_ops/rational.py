"""Exact rational parameters for the samplers, always rounded in the direction of more privacy.

The samplers take their scale as an exact fraction. Requested scales come from floats (epsilon,
bounds), so they are converted with :class:`fractions.Fraction` (exact for a float) and rounded
**up** to a relative precision of ``2^-20`` (the denominator is a power of two chosen so the
numerator has about 20 bits): the noise is never smaller than requested, the privacy spent is never
larger than allocated, and the samplers' integers stay small enough for 64-bit arithmetic.
"""

from __future__ import annotations

import math
from fractions import Fraction

from dp_ops.errors import NoiseRangeError

Rational = Fraction

RELATIVE_BITS = 20

MAX_LAPLACE_SCALE = Fraction(2**50)
"""The largest discrete Laplace scale a plan may ask for (standard deviation about 1.6e15 steps).
The samplers draw in int64 up to 2^56; a larger scale would leave the 64-bit range with a
non-negligible chance, and the tail arithmetic in doubles would lose all precision."""
MAX_GAUSSIAN_VARIANCE = Fraction(2**100)
"""The largest discrete Gaussian sigma^2 a plan may ask for (sigma 2^50, about 1.1e15 steps)."""


def round_up(value: float | Fraction, relative_bits: int = RELATIVE_BITS) -> Fraction:
    """The smallest multiple of ``2^-k`` that is >= ``value`` (> 0), with ``k >= 0`` chosen so
    the result is within a factor ``1 + 2^-relative_bits`` of ``value``."""
    exact = Fraction(value)
    if exact <= 0:
        raise ValueError("a noise scale must be positive")
    magnitude = math.floor(math.log2(exact.numerator) - math.log2(exact.denominator))
    bits = max(0, relative_bits - magnitude)
    denominator = 1 << bits
    return Fraction(math.ceil(exact * denominator), denominator)


def laplace_scale(sensitivity: int | Fraction, epsilon: float | Fraction) -> Fraction:
    """Discrete Laplace scale for an L1 sensitivity at ``epsilon``: ``sensitivity/epsilon``, up.

    NoiseRangeError if it exceeds :data:`MAX_LAPLACE_SCALE`.
    """
    if epsilon <= 0:
        raise NoiseRangeError("a Laplace noise share of epsilon 0 (the budget is too small)")
    exact = Fraction(sensitivity) / Fraction(epsilon)
    if exact > MAX_LAPLACE_SCALE:
        raise NoiseRangeError("a Laplace noise scale beyond 2^50 steps")
    return round_up(exact)


def gaussian_variance(l2_sensitivity_squared: int | Fraction, rho: float | Fraction) -> Fraction:
    """Discrete Gaussian ``sigma^2`` for a squared L2 sensitivity at ``rho``-zCDP, rounded up.

    ``rho = Delta_2^2 / (2 sigma^2)``, so ``sigma^2 = Delta_2^2 / (2 rho)``. NoiseRangeError if it
    exceeds :data:`MAX_GAUSSIAN_VARIANCE`.
    """
    if rho <= 0:
        raise NoiseRangeError("a Gaussian noise share of rho 0 (the budget is too small)")
    exact = Fraction(l2_sensitivity_squared) / (2 * Fraction(rho))
    if exact > MAX_GAUSSIAN_VARIANCE:
        raise NoiseRangeError("a Gaussian noise standard deviation beyond 2^50 steps")
    return round_up(exact)


MIN_BUDGET = Fraction(1, 10**12)
"""The smallest epsilon or rho a release may state: below it every noise scale of a count is over
10^12, and the arithmetic that turns budgets into scales leaves the range of a double."""
MIN_DELTA = Fraction(1, 10**100)
"""The smallest non-zero delta: thresholds are computed from log(1 / delta) in doubles."""


def exact_decimal(value: object) -> Fraction:
    """The exact number a person wrote: ``0.1`` is 1/10, not the binary double nearest to it.

    Takes an int, a float (read back as the shortest decimal that gives the same double, which
    is what a YAML file or a command line said: ``0.1``, ``1e-06``), or a string holding a
    decimal (``"0.1"``, ``"1e-6"``, which YAML leaves as text) or a fraction (``"1/3"``).
    ValueError for anything else, infinities and NaN included.
    """
    if isinstance(value, bool):
        raise ValueError("a truth value is not a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return Fraction(repr(value))
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 100 or any(c not in "0123456789+-./eE_" for c in text):
            raise ValueError("not a decimal number")
        try:
            return Fraction(text.replace("_", ""))
        except ZeroDivisionError:
            raise ValueError("a fraction over zero") from None
    raise ValueError("not a number")
