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

Rational = Fraction

RELATIVE_BITS = 20


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
    """Discrete Laplace scale for an L1 sensitivity at ``epsilon``: ``sensitivity/epsilon``, up."""
    return round_up(Fraction(sensitivity) / Fraction(epsilon))


def gaussian_variance(l2_sensitivity_squared: int | Fraction, rho: float | Fraction) -> Fraction:
    """Discrete Gaussian ``sigma^2`` for a squared L2 sensitivity at ``rho``-zCDP, rounded up.

    ``rho = Delta_2^2 / (2 sigma^2)``, so ``sigma^2 = Delta_2^2 / (2 rho)``.
    """
    return round_up(Fraction(l2_sensitivity_squared) / (2 * Fraction(rho)))
