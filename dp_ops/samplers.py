"""Exact discrete Laplace and discrete Gaussian samplers, vectorized over keyed streams.

These are the rejection samplers of Canonne, Kamath and Steinke, "The Discrete Gaussian for
Differential Privacy" (NeurIPS 2020): Algorithm 1 (Bernoulli(exp(-gamma)) for rational gamma),
Algorithm 2 (discrete Laplace) and Algorithm 3 (discrete Gaussian). Every step is integer
arithmetic on uniform integers drawn by rejection from 64-bit words, so the output distribution is
exactly the stated one: no floating-point inverse CDF, no porous outputs (Mironov 2012), and integer
noise added to integer aggregates leaves no rounding channel (Haney et al. 2022).

Arrays hold int64 while every intermediate provably fits; otherwise Python integers (numpy object
arrays) take over, so a large scale costs speed, never exactness.

For scales below ``TABLE_LIMIT`` the public samplers take the table-driven path of
:mod:`dp_ops.table_samplers` (same distributions, exactly; about one 64-bit word per decision);
the rejection samplers here remain for larger scales, for the discrete Gaussian's far tail, and
as the reference the tests compare against.
"""

from __future__ import annotations

from math import isqrt

import numpy as np

from dp_ops import table_samplers
from dp_ops.keyed_stream import KeyedStreams
from dp_ops.rational import Rational

TABLE_LIMIT = 1 << 40  # scales (and sigmas) below this use the table-driven samplers
_SAFE = 1 << 62  # int64 arithmetic below this bound cannot overflow in the operations used here
_U64 = np.uint64
_ONE = np.full((), 1, dtype=np.int64)
_TWO = np.full((), 2, dtype=np.int64)


def _as_ints(values: np.ndarray) -> np.ndarray:
    """int64 if every value is a non-negative integer below 2^62, else Python ints (object)."""
    if values.dtype == object:
        if len(values) == 0 or int(max(values)) < _SAFE:
            return values.astype(np.int64)
        return values
    return values.astype(np.int64)


def uniform_below(streams: KeyedStreams, rows: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Uniform integers in ``[0, n)`` (``n >= 1`` per row), exactly, by rejection sampling."""
    n = np.broadcast_to(np.asarray(n), rows.shape)
    if n.dtype == object and len(n) and int(max(n)) >= _SAFE:
        return _uniform_below_big(streams, rows, n)
    n64 = n.astype(_U64)
    if len(n64) and int(n64.max()) < (1 << 32):
        return _uniform_below_32(streams, rows, n64)
    out = np.empty(len(rows), dtype=np.int64)
    # Accept words w >= (2^64 mod n): the accepted range has a length divisible by n.
    with np.errstate(over="ignore"):
        reject_below = (_U64(0) - n64) % n64
    todo = np.arange(len(rows))
    while len(todo):
        words = streams.next_words(rows[todo])
        ok = words >= reject_below[todo]
        out[todo[ok]] = (words[ok] % n64[todo[ok]]).astype(np.int64)
        todo = todo[~ok]
    return out


def _uniform_below_32(streams: KeyedStreams, rows: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Lemire's nearly divisionless method for bounds below 2^32 (exactly uniform).

    ``m = x * n`` for a uniform 32-bit ``x``; ``m >> 32`` is uniform on [0, n) once the rare
    ``m mod 2^32 < (2^32 - n) mod n`` cases are rejected; the modulo is only computed for them.
    """
    out = np.empty(len(rows), dtype=np.int64)
    todo = np.arange(len(rows))
    low_mask = _U64(0xFFFFFFFF)
    while len(todo):
        words = streams.next_words(rows[todo])
        bound = n[todo]
        m = (words & low_mask) * bound
        low = m & low_mask
        ok = low >= bound  # certainly accepted
        maybe = ~ok
        if maybe.any():
            b = bound[maybe]
            threshold = ((_U64(1) << _U64(32)) - b) % b
            ok[maybe] = low[maybe] >= threshold
        out[todo[ok]] = (m[ok] >> _U64(32)).astype(np.int64)
        todo = todo[~ok]
    return out


def _uniform_below_big(streams: KeyedStreams, rows: np.ndarray, n: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows), dtype=object)
    todo = np.arange(len(rows))
    while len(todo):
        bounds = [int(v) for v in n[todo]]
        nwords = max((b.bit_length() + 63) // 64 for b in bounds)
        acc = [0] * len(todo)
        for _ in range(nwords):
            words = streams.next_words(rows[todo])
            acc = [(a << 64) | int(w) for a, w in zip(acc, words, strict=True)]
        span = 1 << (64 * nwords)
        keep = []
        for i, (a, b) in enumerate(zip(acc, bounds, strict=True)):
            if a < span - span % b:
                out[todo[i]] = a % b
            else:
                keep.append(i)
        todo = todo[np.asarray(keep, dtype=np.intp)]
    return out


def bernoulli(
    streams: KeyedStreams, rows: np.ndarray, num: np.ndarray, den: np.ndarray
) -> np.ndarray:
    """Bernoulli(num/den) per row, exactly (0 <= num <= den)."""
    drawn: np.ndarray = uniform_below(streams, rows, den)
    return np.asarray(drawn < num, dtype=bool)


def _times(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Exact ``a * k`` for non-negative integer arrays, in int64 when it cannot overflow."""
    if a.dtype != object and len(a) and int(a.max()) < (_SAFE >> 20) and int(k.max()) < (1 << 20):
        product: np.ndarray = a.astype(np.int64) * k
        return product
    return _as_ints(a.astype(object) * k.astype(object))


def bernoulli_exp_at_most_one(
    streams: KeyedStreams, rows: np.ndarray, num: np.ndarray, den: np.ndarray
) -> np.ndarray:
    """Bernoulli(exp(-num/den)) for 0 <= num/den <= 1 (CKS20 Algorithm 1, first case)."""
    num = np.broadcast_to(np.asarray(num), rows.shape)
    den = np.broadcast_to(np.asarray(den), rows.shape)
    result = np.empty(len(rows), dtype=bool)
    k = np.ones(len(rows), dtype=np.int64)
    todo = np.arange(len(rows))
    while len(todo):
        kden = _times(den[todo], k[todo])
        success = bernoulli(streams, rows[todo], num[todo], kden)
        done = todo[~success]
        result[done] = k[done] % 2 == 1
        todo = todo[success]
        k[todo] += 1
    return result


def bernoulli_exp(
    streams: KeyedStreams, rows: np.ndarray, num: np.ndarray, den: np.ndarray
) -> np.ndarray:
    """Bernoulli(exp(-num/den)) for any rational num/den >= 0 (CKS20 Algorithm 1)."""
    num = _as_ints(np.asarray(num))
    den = _as_ints(np.asarray(den))
    whole = _as_ints(np.asarray(num // den))
    frac = _as_ints(np.asarray(num - whole * den))
    result = np.ones(len(rows), dtype=bool)
    remaining = np.asarray(whole).astype(object) if whole.dtype == object else whole.copy()
    todo = np.flatnonzero(remaining > 0)
    while len(todo):
        ok = bernoulli_exp_at_most_one(streams, rows[todo], _ONE, _ONE)
        result[todo[~ok]] = False
        todo = todo[ok]
        remaining[todo] -= 1
        todo = todo[remaining[todo] > 0]
    alive = np.flatnonzero(result)
    if len(alive):
        result[alive] = bernoulli_exp_at_most_one(streams, rows[alive], frac[alive], den[alive])
    return result


def _geometric_exp_minus_one(streams: KeyedStreams, rows: np.ndarray) -> np.ndarray:
    """Number of successes of Bernoulli(exp(-1)) before the first failure."""
    count = np.zeros(len(rows), dtype=np.int64)
    todo = np.arange(len(rows))
    while len(todo):
        ok = bernoulli_exp_at_most_one(streams, rows[todo], _ONE, _ONE)
        todo = todo[ok]
        count[todo] += 1
    return count


def discrete_laplace(streams: KeyedStreams, scale: Rational) -> np.ndarray:
    """One draw per stream from the discrete Laplace distribution with the given scale.

    ``P(X = x)`` is proportional to ``exp(-|x| / scale)`` over the integers (CKS20 Algorithm 2
    with ``scale = t/s``). Variance ``2q/(1-q)^2`` with ``q = exp(-1/scale)``.
    """
    t, s = scale.numerator, scale.denominator
    rows = np.arange(len(streams))
    if t < s * TABLE_LIMIT:
        return table_samplers.discrete_laplace_rows(streams, rows, t, s)
    return discrete_laplace_rejection(streams, rows, t, s)


def discrete_laplace_rejection(
    streams: KeyedStreams, rows: np.ndarray, t: int, s: int
) -> np.ndarray:
    """CKS20 Algorithm 2 for the given rows (scale ``t/s``): any scale, slower."""
    return _discrete_laplace_rows(streams, rows, t, s)


def _discrete_laplace_rows(streams: KeyedStreams, rows: np.ndarray, t: int, s: int) -> np.ndarray:
    big = t * 64 >= _SAFE
    out = np.zeros(len(rows), dtype=object if big else np.int64)
    tt = np.asarray(t, dtype=object if big else np.int64)
    todo = np.arange(len(rows))
    while len(todo):
        u = uniform_below(streams, rows[todo], np.broadcast_to(tt, todo.shape))
        keep = bernoulli_exp_at_most_one(streams, rows[todo], u, np.broadcast_to(tt, todo.shape))
        cand = todo[keep]
        v = _geometric_exp_minus_one(streams, rows[cand])
        x = u[keep].astype(object) + t * v.astype(object) if big else u[keep] + t * v
        y = x // s
        negative = uniform_below(streams, rows[cand], _TWO) == 1
        accepted = ~(negative & (y == 0))
        signed = np.where(negative, -y, y)
        out[cand[accepted]] = signed[accepted]
        todo = np.concatenate([todo[~keep], cand[~accepted]])
    return out


def discrete_gaussian(streams: KeyedStreams, variance: Rational) -> np.ndarray:
    """One draw per stream from the discrete Gaussian with parameter ``sigma^2 = variance``.

    ``P(X = x)`` is proportional to ``exp(-x^2 / (2 sigma^2))`` over the integers (CKS20
    Algorithm 3): a discrete Laplace proposal with scale ``floor(sigma) + 1``, accepted with
    probability ``exp(-(|y| - sigma^2/t)^2 / (2 sigma^2))`` computed exactly in integers.
    """
    n2, d2 = variance.numerator, variance.denominator
    t = isqrt(n2 // d2) + 1
    if t < TABLE_LIMIT:
        return _discrete_gaussian_table(streams, n2, d2, t)
    return discrete_gaussian_rejection(streams, variance)


def _discrete_gaussian_table(
    streams: KeyedStreams,
    n2: int,
    d2: int,
    t: int,
    coarse: int = table_samplers.FAST_BITS,
    size: int | None = None,
) -> np.ndarray:
    """CKS20 Algorithm 3 with table-driven proposal and acceptance.

    The acceptance probability ``exp(-(|y| t d2 - n2)^2 / (2 n2 d2 t^2))`` depends on ``|y|`` only:
    a table holds it for ``|y| < size``; beyond, the exact Bernoulli(exp(-gamma)) sampler decides.
    """
    a, b, c = t * d2, n2, 2 * n2 * d2 * t * t
    size = size or min(1 << 14, 16 * t + 64)
    table = table_samplers.acceptance_table(a, b, c, size, coarse)
    out = np.zeros(len(streams), dtype=np.int64)
    todo = np.arange(len(streams))
    while len(todo):
        y = table_samplers.discrete_laplace_rows(streams, todo, t, 1, coarse)
        magnitude = np.abs(y)
        accept = np.empty(len(todo), dtype=bool)
        inside = magnitude < size
        accept[inside] = table_samplers.bernoulli_below(
            streams, todo[inside], magnitude[inside], table.lo, table.hi, table.exact
        )
        far = np.flatnonzero(~inside)
        if len(far):
            gap = magnitude[far].astype(object) * a - b
            accept[far] = bernoulli_exp(
                streams, todo[far], gap * gap, np.full(len(far), c, dtype=object)
            )
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


def discrete_gaussian_rejection(streams: KeyedStreams, variance: Rational) -> np.ndarray:
    """CKS20 Algorithm 3 with rejection-sampled proposal and acceptance: any variance, slower."""
    n2, d2 = variance.numerator, variance.denominator
    t = isqrt(n2 // d2) + 1
    rows_all = np.arange(len(streams))
    out = np.zeros(len(rows_all), dtype=np.int64)
    todo = rows_all
    den_value = 2 * n2 * d2 * t * t
    while len(todo):
        y = _discrete_laplace_rows(streams, todo, t, 1)
        # gamma = (|y| t d2 - n2)^2 / (2 n2 d2 t^2), in exact integers: int64 when it fits
        if (
            y.dtype != object
            and den_value < _SAFE
            and int(np.abs(y).max()) * t * d2 + n2 < (1 << 31)
        ):
            gap = np.abs(y) * (t * d2) - n2
            num: np.ndarray = gap * gap
            den = np.full(len(todo), den_value, dtype=np.int64)
        else:
            gap = np.abs(y.astype(object)) * (t * d2) - n2
            num = gap * gap
            den = np.full(len(todo), den_value, dtype=object)
        accept = bernoulli_exp(streams, todo, num, den)
        if y.dtype == object and out.dtype != object:
            out = out.astype(object)
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return _as_signed_ints(out) if out.dtype == object else out


def _as_signed_ints(values: np.ndarray) -> np.ndarray:
    if len(values) == 0 or int(max(abs(int(v)) for v in values)) < _SAFE:
        return values.astype(np.int64)
    return values


def bernoulli_table(
    streams: KeyedStreams, index: np.ndarray, hi: np.ndarray, lo: np.ndarray
) -> np.ndarray:
    """Bernoulli(p[index]) per stream, with p given as 128-bit fractions ``(hi, lo) / 2^128``.

    Indices past the end of the table mean probability 1.
    """
    rows = np.arange(len(streams))
    inside = index < len(hi)
    clipped = np.minimum(index, len(hi) - 1)
    w1 = streams.next_words(rows)
    w2 = streams.next_words(rows)
    h, low = hi[clipped], lo[clipped]
    below = (w1 < h) | ((w1 == h) & (w2 < low))
    return np.asarray(np.where(inside, below, True), dtype=bool)
