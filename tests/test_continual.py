"""The tree mechanism's mathematics (no Spark): nodes, the budget factor checked against brute-force
sensitivities (with a control that a factor ignoring max_periods fails), period labels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dp_ops.audit import cuts_between, epsilon_lower_bound
from dp_ops.continual import (
    Node,
    best_depth,
    budget_factor,
    ending_at,
    level_weights,
    levels,
    node_sd_ratio,
    prefix_nodes,
    to_date_sd,
    to_date_variance,
)
from dp_ops.errors import SpecError
from pipelines.periods import label, ordinal, position


def every_node(horizon: int, depth: int | None = None) -> list[Node]:
    return [n for t in range(1, horizon + 1) for n in ending_at(t, horizon, depth)]


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
            for depth in range(1, levels(horizon) + 1):  # a shallower tree: more top nodes
                nodes_d = prefix_nodes(t, horizon, depth)
                assert sorted(p for n in nodes_d for p in n.periods) == list(range(1, t + 1))
                measured = every_node(horizon, depth)
                assert all(n.level < depth and n.last <= t and n in measured for n in nodes_d)
    assert levels(24) == 5 and [n.name for n in prefix_nodes(24, 24)] == ["4-0", "3-2"]
    with pytest.raises(ValueError):
        prefix_nodes(25, 24)


def _tree_change(horizon: int, periods: tuple[int, ...], depth: int | None) -> np.ndarray:
    """How every node changes when one unit adds 1 to each of ``periods`` (one cell)."""
    return np.array(
        [sum(1 for p in periods if p in n.periods) for n in every_node(horizon, depth)],
        dtype=float,
    )


def _worst(horizon: int, max_periods: int, depth: int | None = None) -> tuple[float, float]:
    """The largest L1 and squared L2 change of the whole tree over every set of at most
    ``max_periods`` periods a unit may contribute to."""
    l1 = l2 = 0.0
    for size in range(1, max_periods + 1):
        for periods in itertools.combinations(range(1, horizon + 1), size):
            change = _tree_change(horizon, periods, depth)
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
    for depth in range(1, levels(horizon)):  # shallower trees too
        l1_d, l2_d = _worst(horizon, max_periods, depth)
        assert l1_d <= budget_factor(horizon, max_periods, "laplace", depth)
        assert l2_d <= budget_factor(horizon, max_periods, "gaussian", depth)
    # and without much slack: the bound is reached, or nearly, by some unit
    assert l1 == budget_factor(horizon, max_periods, "laplace") or horizon & (horizon - 1)
    assert l2 >= 0.5 * budget_factor(horizon, max_periods, "gaussian")


def test_control_a_factor_that_ignores_max_periods_under_covers_the_sensitivity() -> None:
    horizon, max_periods = 8, 3
    l1, l2 = _worst(horizon, max_periods)
    event_level_laplace = budget_factor(horizon, 1, "laplace")  # as if each unit had one period
    event_level_gaussian = budget_factor(horizon, 1, "gaussian")
    assert l1 > event_level_laplace and l2 > event_level_gaussian


def _estimates(horizon: int, measured: dict[Node, np.ndarray]) -> dict[Node, np.ndarray]:
    """The bottom-up estimates of every node, as the release computes them."""
    weights = level_weights(levels(horizon))
    out: dict[Node, np.ndarray] = {}
    for node in every_node(horizon):  # children end before or with their parent
        if node.level == 0:
            out[node] = measured[node]
            continue
        w = weights[node.level][0]
        left, right = node.children
        out[node] = w * measured[node] + (1 - w) * (out[left] + out[right])
    return out


def test_totals_to_date_are_unbiased_and_their_error_grows_with_the_nodes_not_the_periods() -> None:
    horizon = 24
    rng = np.random.default_rng(5)
    draws = 20_000
    truth = rng.integers(0, 100, horizon + 1)  # per period; index 0 unused
    measured = {
        n: truth[n.first : n.last + 1].sum() + rng.normal(0.0, 1.0, draws)
        for n in every_node(horizon)
    }
    estimates = _estimates(horizon, measured)
    for t in (1, 2, 7, 16, 23, 24):
        total = sum(estimates[n] for n in prefix_nodes(t, horizon))
        raw = sum(measured[n] for n in prefix_nodes(t, horizon))
        assert np.mean(total) == pytest.approx(truth[1 : t + 1].sum(), abs=0.05)
        assert np.std(total) == pytest.approx(to_date_sd(t, horizon, 1.0), rel=0.03)
        assert to_date_variance(t, horizon) <= len(prefix_nodes(t, horizon))
        if t in (16, 24):  # upper levels: the estimates nearly halve the raw nodes' variance
            assert np.var(total) < 0.6 * np.var(raw)
    # event-level Gaussian: the tree at t = 24 beats summing 24 periods at the same budget
    ratio = node_sd_ratio(horizon, 1, "gaussian")
    assert to_date_sd(24, horizon, ratio) < math.sqrt(24) * 1.0
    assert [round(v, 6) for _, v in level_weights(3)] == [1.0, round(2 / 3, 6), round(4 / 7, 6)]


def test_the_depth_is_the_most_accurate_for_how_often_a_unit_contributes() -> None:
    assert best_depth(24, 24, "gaussian") == 1  # everyone every month: summing months wins
    assert best_depth(24, 24, "laplace") == 1
    assert best_depth(24, 1, "gaussian") > 1  # each unit once: the tree wins
    assert best_depth(4096, 1, "gaussian") >= 8
    assert best_depth(4096, 1, "laplace") > 1


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


def _audit_tree(factor: int, epsilon: float, draws: int = 400_000) -> float:
    """An empirical epsilon lower bound of the Laplace tree (horizon 4) on neighbouring data: a
    person absent, or present in periods 1 and 2, with each node's scale ``factor / epsilon``.
    The test statistic is the privacy loss itself (post-processing of the output)."""
    horizon = 4
    change = _tree_change(horizon, (1, 2), None)
    rng = np.random.default_rng(11)
    scale = factor / epsilon
    absent = rng.laplace(0.0, scale, (draws, len(change)))
    present = change + rng.laplace(0.0, scale, (draws, len(change)))

    def loss(x: np.ndarray) -> np.ndarray:
        values: np.ndarray = (np.abs(x) - np.abs(x - change)).sum(axis=1)
        return values

    a, b = loss(present), loss(absent)
    return epsilon_lower_bound(a, b, cuts_between(a, b))


def test_an_audit_of_the_laplace_tree_stays_within_its_epsilon_and_catches_a_short_factor() -> None:
    epsilon = 1.0
    right = budget_factor(4, 2, "laplace")  # 3 levels x 2 periods
    assert _audit_tree(right, epsilon) <= epsilon
    # control: the factor of a person in one period, for a person in two: the audit exceeds it
    short = budget_factor(4, 1, "laplace")
    assert _audit_tree(short, epsilon) > 1.2 * epsilon
