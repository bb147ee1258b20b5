"""The budget plan: what the mechanisms spend adds up to what the release claims."""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any

import pytest

from dp_ops import accounting
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
    assert plan.epsilon <= Fraction(2.0) and plan.delta <= Fraction(delta)
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
        assert plan.delta == Fraction(delta)  # delta goes to the tables that use it, all of it


def test_noise_scales_follow_sensitivity_over_epsilon() -> None:
    plan = plan_release(spec_with("laplace", 0.0, False, ["count"]))
    t = plan.tables[1]  # L0=2, Linf=3; count, unit count, centered sum share the epsilon
    eps_each = t.epsilon / 3
    count = t.noise_for("count")
    assert count.sensitivity.l1 == 6
    assert count.parameter >= 6 / eps_each and count.parameter - 6 / eps_each < Fraction(1, 2**20)
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
