"""Exact table-driven samplers: one uniform word decides almost every draw.

The rejection samplers of :mod:`dp_ops.samplers` spend many rounds per draw. Here a draw compares
one uniform real ``U`` in [0, 1) against precomputed boundaries (a geometric CDF, or the
acceptance probability of the discrete Gaussian's rejection step) and reads the answer off the
table. The answer is still exact, because every boundary is known only as a rigorous integer
interval and ``U`` is revealed lazily:

* the first 64-bit word ``w`` of the row's stream gives ``U`` to within ``2^-63`` (``w >> 1``);
  when that interval lies entirely on one side of the boundary's interval the comparison is
  decided (all but about ``2^-61`` of comparisons);
* otherwise the boundary is recomputed with 64 more bits (:func:`exp_bounds`, Python's correctly
  rounded ``Decimal.exp`` with a wide error margin) and ``U`` takes its next word, until the two
  separate. Every boundary used here is irrational, or 1, so this ends with probability one.

So the output distribution is the mathematical one, with no floating-point shortcut anywhere.

Geometric magnitudes use the decomposition ``G = B_0 + m_0 (B_1 + m_1 (... + A))``: for
``P(G >= g) = q^g``, ``G mod m`` and ``G div m`` are independent, the first a geometric truncated to
``[0, m)``, the second geometric with ratio ``q^m``. Each ``B_i`` has a table of at most
``MAX_TABLE`` boundaries; ``A`` (ratio at most 1/2) has a short table, and passing its last entry
starts a fresh ``A`` (memorylessness), so no tail is ever cut off.

Tables are built once per scale and process (:func:`functools.lru_cache`) by multiplying
intervals of 256-bit fixed-point numbers, floor for lower and ceiling for upper bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import lru_cache, partial

import numpy as np

from dp_ops.errors import InternalError
from dp_ops.keyed_stream import KeyedStreams

FAST_BITS = 63  # the fast path compares w >> 1 with boundaries in units of 2^-63
WORK_BITS = 256  # precision of table construction
MAX_TABLE = 4096  # boundaries per table level
_U64 = np.uint64

Bounds = tuple[int, int]  # (lo, hi) with lo <= value * 2^bits <= hi


def exp_bounds(num: int, den: int, bits: int) -> Bounds:
    """Integers ``lo <= exp(-num/den) * 2^bits <= hi`` (``den > 0``; ``num`` of any sign).

    ``Decimal`` division and ``exp`` are each correctly rounded at ``digits`` significant digits,
    so the computed value is within a relative ``(|num/den| + 3) * 10^(1 - digits)`` of the truth;
    with ``digits`` 25 above what ``bits`` needs, that is far below the margin added here
    (``2^-60`` relative plus two units) for any argument below 10^18.
    """
    if den <= 0:
        raise InternalError("exp_bounds needs a positive denominator")
    if num == 0:
        return 1 << bits, 1 << bits
    if abs(num) >= den * 10**18:
        raise InternalError("exp_bounds argument out of range")
    digits = math.ceil(bits * 0.30103) + 25 + len(str(abs(num) // den))
    with localcontext() as ctx:
        ctx.prec = digits + 5
        scaled = (-Decimal(num) / Decimal(den)).exp() * (Decimal(2) ** bits)
    centre = int(scaled)  # floor: the value is positive
    margin = (centre >> 60) + 2
    return max(0, centre - margin), centre + margin


def _mul(a: Bounds, b: Bounds, bits: int) -> Bounds:
    return (a[0] * b[0]) >> bits, -((-(a[1] * b[1])) >> bits)


def _div(a: Bounds, b: Bounds, bits: int) -> Bounds:
    """Bounds of ``a / b`` for positive ``b`` (both fixed point at ``bits``)."""
    if b[0] <= 0:
        raise InternalError("division by an interval that contains zero")
    return (a[0] << bits) // b[1], -((-(a[1] << bits)) // b[0])


def _one_minus(a: Bounds, bits: int) -> Bounds:
    return (1 << bits) - a[1], (1 << bits) - a[0]


def _to_fast(bounds: Bounds, bits: int, coarse: int) -> Bounds:
    """Interval at ``bits`` rounded outwards to ``coarse`` bits, expressed in 2^-63 units."""
    shift = bits - coarse
    lo, hi = bounds[0] >> shift, -((-bounds[1]) >> shift)
    return lo << (FAST_BITS - coarse), hi << (FAST_BITS - coarse)


@dataclass(frozen=True)
class Boundaries:
    """Increasing boundaries ``c_1 < ... < c_n`` in (0, 1], as fast intervals plus exact bounds.

    ``lo[j] <= c_{j+1} * 2^63 <= hi[j]`` (uint64); ``exact(j, bits)`` recomputes entry ``j`` at any
    precision. Intervals never overlap: ``hi[j] <= lo[j + 1]``.
    """

    lo: np.ndarray
    hi: np.ndarray
    exact: Callable[[int, int], Bounds]

    def __len__(self) -> int:
        return len(self.lo)


def _fast_table(
    entries: list[Bounds], exact: Callable[[int, int], Bounds], coarse: int
) -> Boundaries:
    fast = [_to_fast(b, WORK_BITS, coarse) for b in entries]
    lo = np.array([f[0] for f in fast], dtype=_U64)
    hi = np.array([f[1] for f in fast], dtype=_U64)
    return Boundaries(lo, hi, exact)


def refine_below(
    streams: KeyedStreams, row: int, word: int, exact: Callable[[int], Bounds]
) -> bool:
    """Exactly decide ``U < c`` where ``U``'s first word is ``word``; ``exact(bits)`` bounds ``c``.

    Draws further words of the row's stream until ``U``'s interval and ``c``'s interval separate.
    """
    bits, u = 64, word
    while True:
        lo, hi = exact(bits)
        if u + 1 <= lo:
            return True
        if u >= hi:
            return False
        bits += 64
        u = (u << 64) | int(streams.next_words(np.array([row], dtype=np.intp))[0])


def count_passed(streams: KeyedStreams, rows: np.ndarray, table: Boundaries) -> np.ndarray:
    """For a fresh uniform ``U`` per row: how many boundaries ``c_j <= U`` (exactly)."""
    words = streams.next_words(rows)
    v = words >> _U64(1)
    count = np.searchsorted(table.hi, v, side="right")  # boundaries certainly at or below U
    n = len(table)
    nxt = np.minimum(count, n - 1)
    unsure = np.flatnonzero((count < n) & (table.lo[nxt] <= v))
    for i in unsure:  # about 2^-61 of draws per boundary
        j = int(count[i])
        below = refine_below(streams, int(rows[i]), int(words[i]), partial(table.exact, j))
        count[i] += 0 if below else 1
    return count.astype(np.int64)


def bernoulli_below(
    streams: KeyedStreams,
    rows: np.ndarray,
    index: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    exact: Callable[[int, int], Bounds],
) -> np.ndarray:
    """Bernoulli(p[index]) per row: ``U < p`` with ``p``'s fast interval ``[lo, hi]`` (2^-63)."""
    words = streams.next_words(rows)
    v = words >> _U64(1)
    result = v + _U64(1) <= lo[index]
    unsure = np.flatnonzero(~result & (v < hi[index]))
    for i in unsure:
        k = int(index[i])
        result[i] = refine_below(streams, int(rows[i]), int(words[i]), partial(exact, k))
    return np.asarray(result, dtype=bool)


# Geometric magnitudes --------------------------------------------------------------------------


@dataclass(frozen=True)
class GeometricLadder:
    """Tables for ``G`` with ``P(G >= g) = exp(-g s / t)``: levels ``(weight, table)`` and top."""

    levels: tuple[tuple[int, Boundaries], ...]
    top_weight: int
    top: Boundaries


def _truncated_level(s: int, t: int, weight: int, m: int, coarse: int) -> Boundaries:
    """``B`` on ``[0, m)`` with ``P(B < j) = (1 - Q^j) / (1 - Q^m)``, ``Q = exp(-s weight / t)``."""
    bits = WORK_BITS
    q = exp_bounds(s * weight, t, bits)
    powers = [q]
    for _ in range(m - 1):
        powers.append(_mul(powers[-1], q, bits))
    denominator = _one_minus(powers[m - 1], bits)
    entries = [_div(_one_minus(powers[j - 1], bits), denominator, bits) for j in range(1, m)]

    def exact(j: int, prec: int) -> Bounds:
        p = prec + 16
        num = _one_minus(exp_bounds(s * weight * (j + 1), t, p), p)
        den = _one_minus(exp_bounds(s * weight * m, t, p), p)
        value = _div(num, den, p)
        return value[0] >> 16, -((-value[1]) >> 16)

    return _checked(_fast_table(entries, exact, coarse))


def _top_level(s: int, t: int, weight: int, coarse: int) -> Boundaries:
    """``A`` with ``P(A >= a) = R^a``, ``R = exp(-s weight / t) <= 1/2``: ``c_a = 1 - R^a``."""
    bits = WORK_BITS
    r = exp_bounds(s * weight, t, bits)
    entries: list[Bounds] = []
    power = r
    tail_bits = min(40, coarse - 4)  # stop at R^a < 2^-tail_bits, well above the fast resolution
    while not entries or (power[1] >> (bits - tail_bits) and len(entries) < MAX_TABLE):
        entries.append(_one_minus(power, bits))
        power = _mul(power, r, bits)

    def exact(j: int, prec: int) -> Bounds:
        return _one_minus(exp_bounds(s * weight * (j + 1), t, prec), prec)

    return _checked(_fast_table(entries, exact, coarse))


def _checked(table: Boundaries) -> Boundaries:
    if len(table) and not (np.all(table.lo <= table.hi) and np.all(table.hi[:-1] <= table.lo[1:])):
        raise InternalError("sampler table boundaries overlap; the scale is outside the design")
    return table


@lru_cache(maxsize=64)
def geometric_ladder(s: int, t: int, coarse: int = FAST_BITS) -> GeometricLadder:
    """Tables for the geometric with ratio ``exp(-s/t)`` (``coarse < 63`` only in tests)."""
    levels = []
    weight = 1
    ln2 = math.log(2)
    while s * weight / t < ln2:  # ratio above 1/2: split off a truncated level
        m = min(MAX_TABLE, max(2, math.ceil(t * ln2 / (s * weight))))
        levels.append((weight, _truncated_level(s, t, weight, m, coarse)))
        weight *= m
    return GeometricLadder(tuple(levels), weight, _top_level(s, t, weight, coarse))


def geometric(streams: KeyedStreams, rows: np.ndarray, ladder: GeometricLadder) -> np.ndarray:
    """One draw per row of ``G`` with ``P(G >= g) = exp(-g s / t)``, exactly."""
    g = np.zeros(len(rows), dtype=np.int64)
    for weight, table in ladder.levels:
        g += count_passed(streams, rows, table) * weight
    top = np.zeros(len(rows), dtype=np.int64)
    todo = np.arange(len(rows))
    while len(todo):
        a = count_passed(streams, rows[todo], ladder.top)
        top[todo] += a
        todo = todo[a == len(ladder.top)]  # past the table: A >= n, and A - n starts afresh
    return g + top * ladder.top_weight


def discrete_laplace_rows(
    streams: KeyedStreams, rows: np.ndarray, t: int, s: int, coarse: int = FAST_BITS
) -> np.ndarray:
    """Discrete Laplace with scale ``t/s`` for the given rows: a geometric magnitude and a sign,
    with "minus zero" rejected so that ``P(x)`` is proportional to ``exp(-|x| s / t)``."""
    ladder = geometric_ladder(s, t, coarse)
    out = np.zeros(len(rows), dtype=np.int64)
    todo = np.arange(len(rows))
    while len(todo):
        magnitude = geometric(streams, rows[todo], ladder)
        negative = (streams.next_words(rows[todo]) & _U64(1)) == _U64(1)
        accepted = ~(negative & (magnitude == 0))
        out[todo[accepted]] = np.where(negative, -magnitude, magnitude)[accepted]
        todo = todo[~accepted]
    return out


# Discrete Gaussian acceptance ------------------------------------------------------------------


@dataclass(frozen=True)
class AcceptanceTable:
    """``p_y = exp(-(y a - b)^2 / c)`` for ``0 <= y < len``: fast intervals and exact bounds."""

    a: int
    b: int
    c: int
    lo: np.ndarray
    hi: np.ndarray

    def exact(self, y: int, bits: int) -> Bounds:
        gap = y * self.a - self.b
        return exp_bounds(gap * gap, self.c, bits)


@lru_cache(maxsize=64)
def acceptance_table(a: int, b: int, c: int, size: int, coarse: int = FAST_BITS) -> AcceptanceTable:
    """Tables of ``exp(-(y a - b)^2 / c)`` built by the recurrence ``p_y = p_{y-1} R_y``,
    ``R_{y+1} = R_y E`` with ``R_1 = exp(-(a^2 - 2ab)/c)`` and ``E = exp(-2a^2/c)``."""
    bits = WORK_BITS
    p = exp_bounds(b * b, c, bits)
    ratio = exp_bounds(a * a - 2 * a * b, c, bits)
    step = exp_bounds(2 * a * a, c, bits)
    fast = []
    for _ in range(size):
        fast.append(_to_fast(p, bits, coarse))
        p = _mul(p, ratio, bits)
        ratio = _mul(ratio, step, bits)
    lo = np.array([min(f[0], 1 << FAST_BITS) for f in fast], dtype=_U64)
    hi = np.array([min(f[1], 1 << FAST_BITS) for f in fast], dtype=_U64)
    return AcceptanceTable(a, b, c, lo, hi)
