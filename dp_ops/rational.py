"""Exact rational parameters for the samplers, always rounded in the direction of more privacy.

The samplers take their scale as an exact fraction. Requested scales come from floats (epsilon,
bounds), so they are converted with :class:`fractions.Fraction` (exact for a float) and rounded
**up** onto a grid of ``1/2^20``: the noise is never smaller than requested, and the privacy spent
is never larger than allocated.
"""

from __future__ import annotations

import math
from fractions import Fraction

Rational = Fraction

GRID_BITS = 20


def round_up(value: float | Fraction, grid_bits: int = GRID_BITS) -> Fraction:
    """The smallest multiple of ``2^-grid_bits`` that is >= ``value`` (which must be > 0)."""
    exact = Fraction(value)
    if exact <= 0:
        raise ValueError("a noise scale must be positive")
    denominator = 1 << grid_bits
    return Fraction(math.ceil(exact * denominator), denominator)


def laplace_scale(sensitivity: int | Fraction, epsilon: float | Fraction) -> Fraction:
    """Discrete Laplace scale for an L1 sensitivity at ``epsilon``: ``sensitivity/epsilon``, up."""
    return round_up(Fraction(sensitivity) / Fraction(epsilon))


def gaussian_variance(l2_sensitivity_squared: int | Fraction, rho: float | Fraction) -> Fraction:
    """Discrete Gaussian ``sigma^2`` for a squared L2 sensitivity at ``rho``-zCDP, rounded up.

    ``rho = Delta_2^2 / (2 sigma^2)``, so ``sigma^2 = Delta_2^2 / (2 rho)``.
    """
    return round_up(Fraction(l2_sensitivity_squared) / (2 * Fraction(rho)))
