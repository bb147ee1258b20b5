"""Private quantiles over a public list of candidates: the exponential mechanism, sampled exactly.

The building block of bounds chosen by the release itself (``upper: auto``): each privacy unit
contributes one value (say its largest), and the candidate whose count of values at or below it
is closest to ``q`` times the number of units is chosen with probability proportional to
``exp(epsilon * utility / (2 * sensitivity))``.

Utility of candidate ``c_i``: ``-|den * #{x <= c_i} - num * n|`` for ``q = num / den``, an
integer. Adding or removing one unit changes ``#{x <= c_i}`` by at most one and ``n`` by one, in
the same direction, so the utility moves by at most ``max(num, den - num)``: the sensitivity.

Sampling is exact, with no floating point: a candidate drawn uniformly is accepted with
probability ``exp(-epsilon * (u_max - u_i) / (2 * sensitivity))``, a Bernoulli of a rational
exponent (:func:`dp_ops.samplers.bernoulli_exp`). The accepted index is distributed exactly as
the mechanism says; the best candidate is accepted with probability one, so at most
``len(candidates)`` tries are expected. Random words come from keyed streams: a stream's draw is
the same however often it is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from dp_ops.errors import InternalError
from dp_ops.keyed_stream import KeyedStreams
from dp_ops.samplers import bernoulli_exp, uniform_below


def exponential_mechanism(
    streams: KeyedStreams, utilities: Sequence[int], epsilon: Fraction, sensitivity: int
) -> np.ndarray:
    """One index per stream, each with probability proportional to
    ``exp(epsilon * utilities[i] / (2 * sensitivity))``: epsilon-DP for utilities whose
    sensitivity is ``sensitivity``. Exact (rational arithmetic)."""
    if not utilities:
        raise InternalError("the exponential mechanism needs at least one candidate")
    if epsilon <= 0 or sensitivity <= 0:
        raise InternalError("the exponential mechanism needs epsilon > 0 and sensitivity > 0")
    u = [int(x) for x in utilities]
    gaps = np.array([max(u) - x for x in u], dtype=object)
    rows = np.arange(len(streams))
    out = np.full(len(rows), -1, dtype=np.int64)
    todo = rows
    num, den = epsilon.numerator, 2 * sensitivity * epsilon.denominator
    while len(todo):
        picked = uniform_below(streams, todo, np.full(len(todo), len(u), dtype=np.int64))
        exponent = np.array([num * g for g in gaps[picked]], dtype=object)
        accepted = bernoulli_exp(streams, todo, exponent, np.full(len(todo), den, dtype=object))
        out[todo[accepted]] = picked[accepted]
        todo = todo[~accepted]
    return out


def quantile_utilities(at_or_below: Sequence[int], n: int, q: Fraction) -> tuple[list[int], int]:
    """(utilities, sensitivity) of the candidates for the ``q`` quantile, from the number of
    units whose value is at or below each candidate and the number of units ``n``."""
    if not 0 < q < 1:
        raise InternalError(f"quantile {q} is not inside (0, 1)")
    num, den = q.numerator, q.denominator
    return [-abs(den * c - num * n) for c in at_or_below], max(num, den - num)


def private_quantile(
    streams: KeyedStreams,
    candidates: Sequence[float],
    at_or_below: Sequence[int],
    n: int,
    q: Fraction,
    epsilon: Fraction,
) -> np.ndarray:
    """The ``q`` quantile of the units' values among ``candidates`` (ascending, public), one per
    stream; ``at_or_below[i]`` counts the units whose value is at most ``candidates[i]``, ``n``
    all units. epsilon-DP in the units (each contributes one value)."""
    if list(candidates) != sorted(candidates) or len(candidates) != len(at_or_below):
        raise InternalError("candidates must be ascending, one count each")
    utilities, sensitivity = quantile_utilities(at_or_below, n, q)
    picked = exponential_mechanism(streams, utilities, epsilon, sensitivity)
    return np.asarray([candidates[i] for i in picked], dtype=float)


def geometric_candidates(granularity: float, steps: int = 62, signed: bool = False) -> list[float]:
    """Public candidates for a bound: 0 and ``granularity * 2^j`` for j = 0 .. steps - 1 (and
    their negatives when ``signed``), ascending. A chosen bound is within a factor 2 of the
    quantile it estimates."""
    positive = [granularity * 2.0**j for j in range(steps)]
    negative = [-x for x in reversed(positive)] if signed else []
    return [*negative, 0.0, *positive]
