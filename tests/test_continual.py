"""The tree mechanism's mathematics (no Spark): nodes, the budget factor checked against brute-force
sensitivities (with a control that a factor ignoring max_periods fails), period labels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dp_ops.continual import (
    Node,
    budget_factor,
    ending_at,
    leaves_factor,
    levels,
    node_sd_ratio,
    prefix_nodes,
    to_date_sd,
)
from dp_ops.errors import SpecError
from pipelines.periods import label, ordinal, position


def every_node(horizon: int) -> list[Node]:
    return [n for t in range(1, horizon + 1) for n in ending_at(t, horizon)]


def test_prefix_nodes_cover_periods_one_to_t_exactly_once() -> None:
    for horizon in (1, 2, 5, 8, 24, 100):
        nodes = every_node(horizon)
        assert len(nodes) == len(set(nodes))
        for t in range(1, horizon + 1):
            covered = [p for n in prefix_nodes(t, horizon) for p in n.periods]
            assert sorted(covered) == list(range(1, t + 1))
            assert len(prefix_nodes(t, horizon)) == bin(t).count("1") <= levels(horizon)
            assert all(n.last <= t for n in prefix_nodes(t, horizon))  # measured by then
            assert all(n.last == t for n in ending_at(t, horizon))
    assert levels(24) == 5 and [n.name for n in prefix_nodes(24, 24)] == ["4-0", "3-2"]
    with pytest.raises(ValueError):
        prefix_nodes(25, 24)


def _tree_change(horizon: int, periods: tuple[int, ...]) -> np.ndarray:
    """How every node changes when one unit adds 1 to each of ``periods`` (one cell)."""
    return np.array(
        [sum(1 for p in periods if p in n.periods) for n in every_node(horizon)], dtype=float
    )


def _worst(horizon: int, max_periods: int) -> tuple[float, float]:
    """The largest L1 and squared L2 change of the whole tree over every set of at most
    ``max_periods`` periods a unit may contribute to."""
    l1 = l2 = 0.0
    for size in range(1, max_periods + 1):
        for periods in itertools.combinations(range(1, horizon + 1), size):
            change = _tree_change(horizon, periods)
            l1, l2 = max(l1, float(change.sum())), max(l2, float((change**2).sum()))
    return l1, l2


@pytest.mark.parametrize(("horizon", "max_periods"), [(6, 1), (6, 2), (6, 6), (8, 3), (9, 4)])
def test_the_budget_factor_bounds_the_trees_sensitivity_by_brute_force(
    horizon: int, max_periods: int
) -> None:
    l1, l2 = _worst(horizon, max_periods)
    # Laplace: the noise of budget / K per node must cover the tree's L1 sensitivity (in units
    # of one period's) and Gaussian the squared L2 one
    assert l1 <= budget_factor(horizon, max_periods, "laplace")
    assert l2 <= budget_factor(horizon, max_periods, "gaussian")
    # and without much slack: the bound is reached, or nearly, by some unit
    assert l1 == budget_factor(horizon, max_periods, "laplace") or horizon & (horizon - 1)
    assert l2 >= 0.5 * budget_factor(horizon, max_periods, "gaussian")


def test_control_a_factor_that_ignores_max_periods_under_covers_the_sensitivity() -> None:
    horizon, max_periods = 8, 3
    l1, l2 = _worst(horizon, max_periods)
    event_level_laplace = budget_factor(horizon, 1, "laplace")  # as if each unit had one period
    event_level_gaussian = budget_factor(horizon, 1, "gaussian")
    assert l1 > event_level_laplace and l2 > event_level_gaussian


def test_tree_error_grows_with_the_nodes_summed_not_the_periods() -> None:
    horizon = 24
    rng = np.random.default_rng(5)
    draws = 20_000
    noise = {n: rng.normal(0.0, 1.0, draws) for n in every_node(horizon)}
    for t in (1, 7, 16, 23, 24):
        total = sum(noise[n] for n in prefix_nodes(t, horizon))
        assert np.std(total) == pytest.approx(to_date_sd(t, horizon, 1.0), rel=0.03)
    # event-level Gaussian: the tree at t = 24 beats summing 24 periods at the same budget
    ratio = node_sd_ratio(horizon, 1, "gaussian")
    assert to_date_sd(24, horizon, ratio) < math.sqrt(24) * 1.0
    assert leaves_factor(3) == 3


def test_period_labels_and_positions() -> None:
    assert position("2027-03", "2027-01", "month", 24) == 3
    assert position("2028-01", "2027-01", "month", 24) == 13
    assert position("2027-Q2", "2027-Q1", "quarter", 8) == 2
    assert position("2029", "2027", "year", 5) == 3
    assert position("2027-03-01", "2027-02-27", "day", 10) == 3  # 2027 is not a leap year
    for kind, start in (("month", "2026-11"), ("quarter", "2026-Q4"), ("day", "2028-02-28")):
        assert label(ordinal(start, kind), kind) == start  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="outside the series"):
        position("2026-12", "2027-01", "month", 24)
    with pytest.raises(SpecError, match="outside the series"):
        position("2029-01", "2027-01", "month", 24)
    for bad in ("2027-13", "2027-3", "27-03", "2027-03-01"):
        with pytest.raises(SpecError, match="write it as 2027-03"):
            ordinal(bad, "month")
