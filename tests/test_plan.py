"""The budget plan: what the mechanisms spend adds up to what the release claims."""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any

import pytest

from dp_ops import accounting
from dp_ops.errors import SpecError
from pipelines.plan import plan_release
from pipelines.spec import parse_spec
from tests.conftest import base_spec


def spec_with(noise: str, delta: float, private: bool, metrics: list[Any]) -> Any:
    doc = base_spec(noise=noise, budget={"epsilon": 2.0, "delta": delta})
    doc["tables"][0]["metrics"] = metrics
    doc["tables"].append(
        {
            "name": "u",
            "dimensions": ["g"],
            "partitions": {"type": "private"}
            if private
            else {"type": "public", "keys": [["a"], ["b"]]},
            "bounds": {"max_partitions": 2, "max_rows_per_partition": 3},
            "metrics": ["privacy_unit_count", {"mean": "v", "lower": -4, "upper": 10}],
            "weight": 3,
        }
    )
    return parse_spec(doc)


METRIC_SETS = [
    ["count"],
    ["privacy_unit_count", {"sum": "v", "lower": 0, "upper": 10}],
    [{"mean": "v", "lower": 0, "upper": 1}],
]


@pytest.mark.parametrize(
    ("noise", "delta", "private", "metrics"),
    [
        (n, d, p, m)
        for n, d, p, m in itertools.product(
            ["auto", "laplace", "gaussian"], [0.0, 1e-6], [False, True], METRIC_SETS
        )
        if not (d == 0 and (p or n == "gaussian"))
    ],
)
def test_spent_equals_the_sum_of_mechanisms_and_never_exceeds_the_budget(
    noise: str, delta: float, private: bool, metrics: list[Any]
) -> None:
    plan = plan_release(spec_with(noise, delta, private, metrics))
    assert plan.epsilon <= Fraction(2.0) and plan.delta <= Fraction(repr(delta))
    for t in plan.tables:
        sel_eps = t.selection.epsilon if t.selection else 0
        sel_delta = t.selection.delta if t.selection else 0
        if t.family == "laplace":
            assert sum(m.epsilon for m in t.measurements) + sel_eps == t.epsilon
            assert all(m.rho == 0 for m in t.measurements)
        else:  # zCDP inside the table, converted once
            rho = sum(m.rho for m in t.measurements)
            assert (
                accounting.zcdp_epsilon(float(rho), float(t.measurement_delta))
                <= float(t.measurement_epsilon) + 1e-12
            )
        assert t.measurement_delta + sel_delta == t.delta
    assert sum(t.epsilon for t in plan.tables) == plan.epsilon == Fraction(2.0)
    if delta > 0 and (private or noise == "gaussian"):
        assert plan.delta == Fraction(
            repr(delta)
        )  # delta goes to the tables that use it, all of it


def test_noise_scales_follow_sensitivity_over_epsilon() -> None:
    plan = plan_release(spec_with("laplace", 0.0, False, ["count"]))
    t = plan.tables[1]  # L0=2, Linf=3; count, unit count, centered sum share the epsilon
    eps_each = t.epsilon / 3
    count = t.noise_for("count")
    assert count.sensitivity.l1 == 6
    assert 6 / eps_each <= count.parameter < 6 / eps_each * (1 + Fraction(1, 2**20))
    units = t.noise_for("privacy_unit_count")
    assert units.sensitivity.l1 == 2
    s = t.noise_for("s_v")
    v = t.values[0]
    assert v.center != 0  # the count is measured, so the sum is centered
    assert s.sensitivity.per_partition == 3 * max(
        abs(round(-4 / v.granularity) - v.center), abs(round(10 / v.granularity) - v.center)
    )


def test_auto_picks_laplace_for_a_single_low_l0_measurement() -> None:
    plan = plan_release(spec_with("auto", 1e-6, False, ["count"]))
    assert plan.tables[0].family == "laplace"
    assert plan.tables[0].delta == 0


def _private_plan(strategy: str, metrics: list[Any], l0: int = 1, linf: int = 1) -> Any:
    doc = base_spec(budget={"epsilon": 1.0, "delta": 1e-6}, noise="laplace")
    t = doc["tables"][0]
    t["partitions"] = {"type": "private", "strategy": strategy}
    t["metrics"] = metrics
    t["bounds"] = {"max_partitions": l0, "max_rows_per_partition": linf}
    return plan_release(parse_spec(doc)).tables[0]


@pytest.mark.parametrize("l0", [1, 5])
def test_auto_selection_gives_the_lowest_error_and_keeps_the_most_partitions(l0: int) -> None:
    metrics = ["privacy_unit_count", "count"]
    auto = _private_plan("auto", metrics, l0)
    assert auto.selection.strategy == "post_aggregation"
    auto_sd = auto.noise_for("privacy_unit_count").sd()[0]
    auto_n50 = auto.selection.units_for_even_odds(auto.units_noise)
    for strategy in ("laplace", "gaussian", "truncated_geometric"):
        other = _private_plan(strategy, metrics, l0)
        assert auto_sd < other.noise_for("privacy_unit_count").sd()[0], strategy
        assert auto_n50 <= other.selection.units_for_even_odds(other.units_noise), strategy
    # a row count with one row per unit and cell is the unit count: post-aggregation again
    counted = _private_plan("auto", ["count"], l0)
    assert (counted.selection.strategy, counted.selection.carrier) == ("post_aggregation", "count")
    counted_n50 = counted.selection.units_for_even_odds(counted.units_noise)
    assert counted.selection.keep_probability(1, counted.units_noise) <= counted.selection.delta
    for strategy in ("laplace", "gaussian", "truncated_geometric"):
        other = _private_plan(strategy, ["count"], l0)
        assert counted.noise_for("count").sd()[0] < other.noise_for("count").sd()[0], strategy
        assert counted_n50 <= other.selection.units_for_even_odds(), strategy
    # without a unit count, auto takes the strategy that needs the fewest units
    plain = _private_plan("auto", ["count"], l0, linf=2)
    best = min(
        _private_plan(s, ["count"], l0, linf=2).selection.units_for_even_odds()
        for s in ("laplace", "gaussian", "truncated_geometric")
    )
    assert plain.selection.units_for_even_odds() == best


@pytest.mark.parametrize(
    "strategy", ["post_aggregation", "laplace", "gaussian", "truncated_geometric"]
)
@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
def test_every_selection_strategy_spends_exactly_the_table_budget(
    strategy: str, noise: str
) -> None:
    doc = base_spec(budget={"epsilon": 1.5, "delta": 1e-6}, noise=noise)
    t = doc["tables"][0]
    t["partitions"] = {"type": "private", "strategy": strategy, "weight": 2}
    t["metrics"] = ["privacy_unit_count", {"mean": "v", "lower": 0, "upper": 5}]
    plan = plan_release(parse_spec(doc))
    tp = plan.tables[0]
    assert plan.epsilon == Fraction(1.5) and plan.delta == Fraction("1e-6")
    if noise == "laplace":
        assert sum(m.epsilon for m in tp.measurements) + tp.selection.epsilon == tp.epsilon
    assert tp.selection.strategy == strategy
    if strategy == "post_aggregation":
        assert tp.selection.epsilon == 0  # inside the unit count's own budget
        shares = [m.epsilon or m.rho for m in tp.measurements]
        units = tp.noise_for("privacy_unit_count")
        assert (units.epsilon or units.rho) == 3 * min(shares)  # weight 1 + selection weight 2


def test_post_aggregation_needs_the_unit_count() -> None:
    doc = base_spec()
    doc["tables"][0]["partitions"] = {"type": "private", "strategy": "post_aggregation"}
    parse_spec(doc)  # count with max_rows_per_partition 1: the unit count
    doc["tables"][0]["bounds"]["max_rows_per_partition"] = 2
    with pytest.raises(SpecError, match="post_aggregation needs a released count of distinct"):
        parse_spec(doc)


def rho_spec(noise: str, rho: float, delta: float = 0.0) -> Any:
    doc = base_spec(noise=noise, budget={"rho": rho, "delta": delta})
    doc["tables"].append(
        {
            "name": "u",
            "dimensions": ["g"],
            "partitions": {"type": "public", "keys": [["a"], ["b"]]},
            "bounds": {"max_partitions": 2, "max_rows_per_partition": 3},
            "metrics": ["privacy_unit_count", {"mean": "v", "lower": -4, "upper": 10}],
            "weight": 3,
        }
    )
    return parse_spec(doc)


@pytest.mark.parametrize("noise", ["auto", "laplace", "gaussian"])
def test_a_rho_budget_is_split_by_weight_and_never_overspent(noise: str) -> None:
    plan = plan_release(rho_spec(noise, 0.5))
    shares = [t.rho for t in plan.tables]
    assert shares == [Fraction(1, 8), Fraction(3, 8)]  # weights 1 and 3 of rho 0.5
    for t in plan.tables:
        assert t.rho is not None and t.zcdp_cost is not None
        per_measurement = t.rho / len(t.measurements)
        for m in t.measurements:
            if t.family == "gaussian":
                assert m.rho == per_measurement and m.epsilon == 0  # all of it, exactly
            else:  # pure epsilon-DP is epsilon^2/2-zCDP: the largest epsilon that fits
                assert m.epsilon**2 / 2 <= per_measurement
                assert (m.epsilon + Fraction(1, 1 << 40)) ** 2 / 2 > per_measurement
        assert t.zcdp_cost <= t.rho
    cost = plan.cost
    assert cost.rho is not None and cost.rho <= Fraction(0.5)
    assert cost.epsilon is None  # no conversion delta declared: no (epsilon, delta) claim
    if noise == "gaussian":
        assert cost.rho == Fraction(0.5)


def test_a_rho_budget_with_delta_reports_its_conversion_once() -> None:
    plan = plan_release(rho_spec("gaussian", 0.5, delta=1e-6))
    cost = plan.cost
    assert cost.rho == Fraction(0.5) and cost.delta == Fraction("1e-6")
    assert cost.epsilon == Fraction(accounting.zcdp_epsilon(0.5, 1e-6))
    # converting once is tighter than adding each table's converted epsilon
    per_table = sum(accounting.zcdp_epsilon(float(t.rho), 1e-6 / 2) for t in plan.tables)
    assert float(cost.epsilon) < per_table


def test_an_epsilon_release_states_its_zcdp_cost_unless_it_selects_privately() -> None:
    public = plan_release(spec_with("laplace", 0.0, False, METRIC_SETS[1]))
    rho = public.cost.rho
    assert rho == sum(m.epsilon**2 / 2 for t in public.tables for m in t.measurements)
    private = plan_release(spec_with("laplace", 1e-6, True, METRIC_SETS[1]))
    assert private.cost.rho is None and private.cost.epsilon == Fraction(2.0)


@pytest.mark.parametrize("l0", [1, 3, 40])
@pytest.mark.parametrize("strategy", ["laplace", "gaussian", "truncated_geometric"])
@pytest.mark.parametrize("p", [0.5, 0.95])
def test_units_for_a_probability_is_the_first_count_that_reaches_it(
    l0: int, strategy: str, p: float
) -> None:
    from pipelines.plan import plan_table

    doc = base_spec(budget={"epsilon": 1, "delta": 1e-6})
    doc["tables"][0].update(
        partitions={"type": "private", "strategy": strategy, "pre_threshold": 2},
        bounds={"max_partitions": l0, "max_rows_per_partition": 1},
        metrics=["count"],
    )
    t = parse_spec(doc).tables[0]
    sel = plan_table(t, Fraction(1), Fraction(1, 10**6), "laplace", strategy).selection
    assert sel is not None
    n = sel.units_for_probability(p)
    linear = next(k for k in range(sel.pre_threshold, 10**6) if sel.keep_probability(k) >= p)
    assert n == linear and sel.keep_probability(n - 1) < p
    even = sel.units_for_even_odds()
    assert n == even if p == 0.5 else n > even


def test_bounds_too_large_for_a_truncated_geometric_table_plan_without_it() -> None:
    """L0 = 10^6 once built a keep table of 10^7 entries and searched the threshold linearly."""
    doc = base_spec()
    doc["tables"][0].update(
        partitions={"type": "private"},
        bounds={"max_partitions": 10**6, "max_rows_per_partition": 2},
        metrics=["count"],
    )
    plan = plan_release(parse_spec(doc))
    assert plan.tables[0].selection is not None
    assert plan.tables[0].selection.strategy in ("laplace", "gaussian")
    doc["tables"][0]["partitions"]["strategy"] = "truncated_geometric"
    with pytest.raises(SpecError, match=r"tables\[0\] \(t\): .*truncated geometric table"):
        plan_release(parse_spec(doc))
