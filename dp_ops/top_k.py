"""The most common categories of a cell, privately: the exponential mechanism, peeled k times,
sampled exactly.

A cell's rows fall in public categories; after bounding, adding or removing one privacy unit
raises or lowers every category's count by at most ``sensitivity`` (``max_rows_per_partition``)
and moves them all the same way. For such monotone utilities the exponential mechanism that
picks category ``j`` with probability proportional to ``exp(epsilon * count_j / sensitivity)``
is epsilon-DP (McSherry and Talwar 2007, the monotone case). The top k are k picks one after
another, each among the categories not yet picked, each with ``epsilon / k``: epsilon-DP by
composition. A unit's rows reach at most ``max_partitions`` cells: the caller divides the
metric's epsilon by it.

Sampling is exact, without floating point: a category left is proposed uniformly and accepted
with probability ``exp(-epsilon_k * (best - count) / sensitivity)`` (a Bernoulli of a rational
exponent, :func:`dp_ops.samplers.bernoulli_exp`); the accepted one is distributed exactly as the
mechanism says, and a best category is always accepted. Random words come from keyed streams:
computing a cell again gives the same picks.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from dp_ops.errors import InternalError
from dp_ops.keyed_stream import KeyedStreams
from dp_ops.samplers import bernoulli_exp, uniform_below


def top_k(
    streams: KeyedStreams, counts: np.ndarray, k: int, epsilon: Fraction, sensitivity: int
) -> np.ndarray:
    """``(rows, k)``: per row of ``counts`` (one stream each), the indices of k distinct
    categories, most likely the largest counts first (see the module docstring)."""
    if counts.ndim != 2 or counts.shape[0] != len(streams):
        raise InternalError("top_k needs one row of counts per stream")
    rows, m = counts.shape
    if not 1 <= k <= m or epsilon <= 0 or sensitivity < 1:
        raise InternalError(f"top_k needs 1 <= k <= categories, epsilon > 0: k={k}, m={m}")
    counts = counts.astype(np.int64)
    each = epsilon / k
    num, den = each.numerator, each.denominator * sensitivity
    left = np.ones((rows, m), dtype=bool)
    out = np.empty((rows, k), dtype=np.int64)
    low = np.iinfo(np.int64).min
    for r in range(k):
        best = np.where(left, counts, low).max(axis=1)
        picked = np.full(rows, -1, dtype=np.int64)
        todo = np.arange(rows)
        while len(todo):
            free = left[todo]
            j = uniform_below(streams, todo, free.sum(axis=1))
            # the j-th category still free in each row
            idx = np.argmax(np.cumsum(free, axis=1) > j[:, None], axis=1)
            gap = best[todo] - counts[todo, idx]
            exponent = np.array([int(g) * num for g in gap], dtype=object)
            accepted = bernoulli_exp(streams, todo, exponent, np.full(len(todo), den, dtype=object))
            picked[todo[accepted]] = idx[accepted]
            todo = todo[~accepted]
        out[:, r] = picked
        left[np.arange(rows), picked] = False
    return out


def probability_first_is_best(
    categories: int, gap: float, epsilon_each: float, sensitivity: int
) -> float:
    """A lower bound on the probability that the first pick is the largest category when it
    leads every other by ``gap`` rows: ``1 / (1 + (m - 1) exp(-epsilon_each * gap / s))``."""
    return 1.0 / (1.0 + (categories - 1) * math.exp(-epsilon_each * gap / sensitivity))


def gap_for(probability: float, categories: int, epsilon_each: float, sensitivity: int) -> float:
    """The lead (in rows) at which the first pick is the largest category with at least
    ``probability`` (:func:`probability_first_is_best` solved for the gap)."""
    if categories < 2:
        return 0.0
    odds = probability / (1 - probability)
    return sensitivity * math.log(odds * (categories - 1)) / epsilon_each
