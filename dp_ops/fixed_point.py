"""Fixed-point grids for sums of real values.

A value is clamped to the public bounds ``[lower, upper]`` and rounded to the nearest multiple of
the granularity ``g``, ``q = round_half_up(v / g)``: an integer, the same for a record wherever it
is processed. Sums of ``q`` are exact integers, independent of order (no floating-point sensitivity
error, Casacuberta et al. 2022), and integer noise keeps released sums on the grid. A coarser grid
costs accuracy (each record moves by up to ``g/2``) but not privacy.
"""

from __future__ import annotations

import math

DEFAULT_STEPS = 1 << 16
MAX_STEPS = 1 << 52
"""At most this many grid steps from 0 to a bound: grid values stay exact in a double."""


def default_granularity(lower: float, upper: float) -> float:
    """The power of two closest below ``max(|lower|, |upper|) / 2^16`` (at least 2^-30)."""
    top = max(abs(lower), abs(upper))
    if top == 0:
        return 1.0
    return float(2.0 ** max(-30, math.floor(math.log2(top / DEFAULT_STEPS))))


def grid_bounds(lower: float, upper: float, granularity: float) -> tuple[int, int]:
    """Integer grid indices of the clamping bounds, rounded as every row is (:func:`round_half_up`).

    The rounding is monotone, so a row's grid value lies between these two: the sum's
    sensitivity holds however a value falls between grid points.
    """
    return round_half_up(lower / granularity), round_half_up(upper / granularity)


def round_half_up(x: float) -> int:
    """``x`` rounded to the nearest integer, halves away from zero, in double arithmetic.

    The rows' grid values are computed by the same operations in Spark
    (:func:`pipelines.sql_text.round_half_up`), so the two agree exactly on every double.
    """
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)
