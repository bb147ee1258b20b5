"""The binary-tree mechanism for running totals over a series of periods (continual counting).

Periods are numbered 1 .. ``horizon``. Node ``(level j, index i)`` covers the ``2**j`` periods
``i * 2**j + 1 .. (i + 1) * 2**j``; it is measured once, with fresh noise, in the period that
ends it. A tree of ``depth`` levels has nodes of 1, 2, .., ``2**(depth - 1)`` periods; depth 1
is one release per period. The total to date after period ``t`` is a sum over the nodes of
``t``'s decomposition (:func:`prefix_nodes`): the largest nodes first, so with the full depth
``popcount(t)`` nodes, at most :func:`levels`, and its error grows with the logarithm of ``t``;
summing ``t`` per-period releases grows with ``t``.

Privacy (Chan, Shi and Song 2011; Dwork, Naor, Pitassi and Rothblum 2010), for a privacy unit
that contributes to at most ``P`` periods (``max_periods``), with per-period sensitivities
``Delta_1`` (L1) and ``Delta_2`` (L2) from the table's bounds:

* a node's change is at most the sum of the unit's per-period changes inside it, so within one
  level the nodes change by at most ``P * Delta_1`` in L1 and, since at most ``min(2**j, P)`` of
  the unit's periods fall in one node, by at most ``sqrt(P * min(2**j, P)) * Delta_2`` in L2;
* over a tree of ``D`` levels: L1 sensitivity ``D * P * Delta_1``, squared L2 sensitivity
  ``P * sum_{j < D} min(2**j, P) * Delta_2**2``.

So every node measured with the noise of a one-period release at ``budget / K`` spends
``budget`` over the whole series, where ``K`` is :func:`budget_factor` (linear in epsilon for
Laplace noise, in rho for Gaussian noise).

Estimation (Honaker 2015, the bottom-up pass): when a node is measured, every node below it has
been, so its total is estimated from its own measurement and its children's estimates, weighted
by their inverse variances (:func:`level_weights`). The total to date sums the estimates of its
decomposition's nodes; each node's subtree holds every measurement made by then that concerns
it, so this is the best linear unbiased estimate, at nearly half the variance of the raw nodes
at the upper levels. Post-processing: nothing more is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Family = Literal["laplace", "gaussian"]


@dataclass(frozen=True, order=True)
class Node:
    """A node of the tree: ``2**level`` periods from ``index * 2**level + 1``."""

    level: int
    index: int

    @property
    def first(self) -> int:
        return self.index * (1 << self.level) + 1

    @property
    def last(self) -> int:
        """The period that ends the node: it is measured then."""
        return (self.index + 1) * (1 << self.level)

    @property
    def periods(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def children(self) -> tuple[Node, Node]:
        if self.level == 0:
            raise ValueError("a leaf has no children")
        return Node(self.level - 1, 2 * self.index), Node(self.level - 1, 2 * self.index + 1)

    @property
    def name(self) -> str:
        return f"{self.level}-{self.index}"


def levels(horizon: int) -> int:
    """How many levels the full tree of ``horizon`` periods has: nodes of 1, 2, 4, ... periods
    up to the largest power of two not above ``horizon``."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return horizon.bit_length()


def _depth(horizon: int, depth: int | None) -> int:
    full = levels(horizon)
    if depth is None:
        return full
    if not 1 <= depth <= full:
        raise ValueError(f"a tree over {horizon} periods has 1 .. {full} levels, not {depth}")
    return depth


def _check_period(t: int, horizon: int) -> None:
    if not 1 <= t <= horizon:
        raise ValueError(f"period {t} is outside 1 .. {horizon}")


def prefix_nodes(t: int, horizon: int, depth: int | None = None) -> tuple[Node, ...]:
    """The nodes whose sum is the total of periods 1 .. ``t``, largest first: as many of the
    top level's as fit, then the binary decomposition of the rest."""
    depth = _depth(horizon, depth)
    _check_period(t, horizon)
    top = depth - 1
    nodes = [Node(top, i) for i in range(t >> top)]
    start = (t >> top) << top
    for level in reversed(range(top)):
        size = 1 << level
        if t & size:
            nodes.append(Node(level, start // size))
            start += size
    return tuple(nodes)


def ending_at(t: int, horizon: int, depth: int | None = None) -> tuple[Node, ...]:
    """The nodes measured in period ``t``: those it ends, the leaf first."""
    depth = _depth(horizon, depth)
    _check_period(t, horizon)
    out = []
    for level in range(depth):
        size = 1 << level
        if t % size:
            break
        out.append(Node(level, t // size - 1))
    return tuple(out)


def budget_factor(horizon: int, max_periods: int, family: Family, depth: int | None = None) -> int:
    """``K``: the tree spends ``K`` times what one node's noise spends on one period's data.

    Laplace (epsilon): ``D * P``. Gaussian (rho): ``P * sum_{j < D} min(2**j, P)``. ``P`` is
    ``max_periods``, at most ``horizon``; ``D`` the depth (default: the full tree).
    """
    depth = _depth(horizon, depth)
    if not 1 <= max_periods <= horizon:
        raise ValueError(f"max_periods must be in 1 .. {horizon}, got {max_periods}")
    if family == "laplace":
        return depth * max_periods
    return max_periods * sum(min(1 << j, max_periods) for j in range(depth))


def level_weights(depth: int) -> tuple[tuple[float, float], ...]:
    """Per level ``j``: (the weight of a node's own measurement in its estimate, the variance
    of that estimate), in units of one node's noise variance. A leaf's estimate is its
    measurement (1, 1); above, the measurement (variance 1) and the children's estimates' sum
    (variance ``2 v``) are weighted by their inverse variances."""
    out = [(1.0, 1.0)]
    for _ in range(1, depth):
        below = 2 * out[-1][1]
        weight = below / (1 + below)
        out.append((weight, weight))  # variance 1 * below / (1 + below): the weight itself
    return tuple(out)


def to_date_variance(t: int, horizon: int, depth: int | None = None) -> float:
    """The variance of the total to date after period ``t`` (the estimates of its
    decomposition's nodes), in units of one node's noise variance."""
    depth = _depth(horizon, depth)
    _check_period(t, horizon)
    weights = level_weights(depth)
    top = depth - 1
    below = sum(weights[j][1] for j in range(top) if t & (1 << j))
    return (t >> top) * weights[top][1] + below


def to_date_sd(t: int, horizon: int, node_sd: float, depth: int | None = None) -> float:
    """The standard deviation of the total to date after period ``t``, for nodes of standard
    deviation ``node_sd``."""
    return node_sd * math.sqrt(to_date_variance(t, horizon, depth))


def node_sd_ratio(
    horizon: int, max_periods: int, family: Family, depth: int | None = None
) -> float:
    """A node's noise standard deviation over that of one period released alone at the same
    series budget (depth 1): noise scales with ``K`` for Laplace, ``sqrt(K)`` for Gaussian."""
    ratio = budget_factor(horizon, max_periods, family, depth) / max_periods
    return ratio if family == "laplace" else math.sqrt(ratio)


def worst_to_date_sd(horizon: int, max_periods: int, family: Family, depth: int) -> float:
    """The largest standard deviation of a total to date over the series, in units of the
    noise of one period released alone at the series' budget."""
    worst = max(to_date_variance(t, horizon, depth) for t in range(1, horizon + 1))
    return node_sd_ratio(horizon, max_periods, family, depth) * math.sqrt(worst)


@lru_cache(maxsize=64)
def best_depth(horizon: int, max_periods: int, family: Family) -> int:
    """The depth whose worst total to date is the most accurate (the shallowest of equals):
    the full tree when units contribute to few periods, one release per period when each
    contributes to nearly all of them."""
    return min(
        range(1, levels(horizon) + 1),
        key=lambda d: (round(worst_to_date_sd(horizon, max_periods, family, d), 12), d),
    )
