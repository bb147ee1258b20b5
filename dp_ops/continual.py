"""The binary-tree mechanism for running totals over a series of periods (continual counting).

Periods are numbered 1 .. ``horizon``. Node ``(level j, index i)`` covers the ``2**j`` periods
``i * 2**j + 1 .. (i + 1) * 2**j``; it is measured once, with fresh noise, in the period that
ends it. The total to date after period ``t`` is the sum of the nodes of ``t``'s binary
decomposition (:func:`prefix_nodes`): ``popcount(t)`` nodes, at most :func:`levels`, so its error
grows with the logarithm of ``t``; summing ``t`` per-period releases grows with ``t``.

Privacy (Chan, Shi and Song 2011; Dwork, Naor, Pitassi and Rothblum 2010), for a privacy unit
that contributes to at most ``P`` periods (``max_periods``), with per-period sensitivities
``Delta_1`` (L1) and ``Delta_2`` (L2) from the table's bounds:

* a node's change is at most the sum of the unit's per-period changes inside it, so within one
  level the nodes change by at most ``P * Delta_1`` in L1 and, since at most ``min(2**j, P)`` of
  the unit's periods fall in one node, by at most ``sqrt(P * min(2**j, P)) * Delta_2`` in L2;
* over the whole tree: L1 sensitivity ``levels * P * Delta_1``, squared L2 sensitivity
  ``P * sum_j min(2**j, P) * Delta_2**2``.

So every node measured with the noise of a one-period release at ``budget / K`` spends
``budget`` over the whole series, where ``K`` is :func:`budget_factor` (linear in epsilon for
Laplace noise, in rho for Gaussian noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    def name(self) -> str:
        return f"{self.level}-{self.index}"


def _check_period(t: int, horizon: int) -> None:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not 1 <= t <= horizon:
        raise ValueError(f"period {t} is outside 1 .. {horizon}")


def levels(horizon: int) -> int:
    """How many levels the tree of ``horizon`` periods has: nodes of 1, 2, 4, ... periods up to
    the largest power of two not above ``horizon``."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return horizon.bit_length()


def prefix_nodes(t: int, horizon: int) -> tuple[Node, ...]:
    """The nodes whose sum is the total of periods 1 .. ``t``, largest first."""
    _check_period(t, horizon)
    nodes = []
    start = 0
    for level in reversed(range(levels(horizon))):
        size = 1 << level
        if t & size:
            nodes.append(Node(level, start // size))
            start += size
    return tuple(nodes)


def ending_at(t: int, horizon: int) -> tuple[Node, ...]:
    """The nodes measured in period ``t``: those it ends, the leaf first."""
    _check_period(t, horizon)
    out = []
    for level in range(levels(horizon)):
        size = 1 << level
        if t % size:
            break
        out.append(Node(level, t // size - 1))
    return tuple(out)


def budget_factor(horizon: int, max_periods: int, family: Family) -> int:
    """``K``: the tree spends ``K`` times what one node's noise spends on one period's data.

    Laplace (epsilon): ``levels * P``. Gaussian (rho): ``P * sum_j min(2**j, P)``. ``P`` is
    ``max_periods``, at most ``horizon``.
    """
    if not 1 <= max_periods <= horizon:
        raise ValueError(f"max_periods must be in 1 .. {horizon}, got {max_periods}")
    n = levels(horizon)
    if family == "laplace":
        return n * max_periods
    return max_periods * sum(min(1 << j, max_periods) for j in range(n))


def leaves_factor(max_periods: int) -> int:
    """``K`` of the alternative: each period released alone (L1 ``P * Delta_1``, squared L2
    ``P * Delta_2**2``), its totals to date summed from them."""
    return max_periods


def to_date_sd(t: int, horizon: int, node_sd: float) -> float:
    """The standard deviation of the total to date after period ``t``: ``popcount(t)``
    independent nodes, each of standard deviation ``node_sd``."""
    return node_sd * math.sqrt(len(prefix_nodes(t, horizon)))


def summed_sd(t: int, leaf_sd: float) -> float:
    """The same for the alternative: ``t`` independent periods of standard deviation
    ``leaf_sd``."""
    return leaf_sd * math.sqrt(t)


def node_sd_ratio(horizon: int, max_periods: int, family: Family) -> float:
    """A tree node's noise standard deviation over a period's released alone, for the same
    series budget: noise scales with ``K`` for Laplace, ``sqrt(K)`` for Gaussian."""
    ratio = budget_factor(horizon, max_periods, family) / leaves_factor(max_periods)
    return ratio if family == "laplace" else math.sqrt(ratio)
