"""Statistical audit: empirical epsilon lower bounds and keep rates, each with a failing control.

Slow (10^5 - 10^6 draws per check); CI runs them. alpha = 1e-6 per assertion.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import pytest

from dp_ops import accounting
from dp_ops.audit import binomial_interval, epsilon_lower_bound
from dp_ops.keyed_stream import KeyedStreams, new_key
from dp_ops.rational import gaussian_variance, laplace_scale
from dp_ops.samplers import bernoulli_table, discrete_gaussian, discrete_laplace
from dp_ops.selection import truncated_geometric_probabilities
from pipelines.plan import NoiseParams, SelectionPlan, TruncatedGeometric, plan_release
from pipelines.spec import parse_spec
from tests.conftest import base_spec

pytestmark = pytest.mark.slow


def streams(n: int) -> KeyedStreams:
    ids = np.random.default_rng().integers(0, 2**63, size=(n, 2), dtype=np.uint64)
    return KeyedStreams(new_key(), ids)


def test_discrete_laplace_epsilon_bound_holds_and_catches_a_halved_scale() -> None:
    eps = math.log(3)
    n = 400_000
    good = laplace_scale(1, eps)
    d0 = 0 + discrete_laplace(streams(n), good)
    d1 = 1 + discrete_laplace(streams(n), good)
    cuts = list(range(-3, 5))
    lb = epsilon_lower_bound(d1, d0, cuts)
    assert 0.9 * eps < lb <= eps  # tight, and never above the claim
    bad = laplace_scale(1, eps) / 2  # planted bug: half the noise, true epsilon 2 ln 3
    b0 = discrete_laplace(streams(n), bad)
    b1 = 1 + discrete_laplace(streams(n), bad)
    assert epsilon_lower_bound(b1, b0, cuts) > eps


def _selection_plan(
    strategy: str, l0: int = 1, eps: float = 1.0, delta: float = 1e-5
) -> tuple[SelectionPlan, NoiseParams | None]:
    doc = base_spec(budget={"epsilon": eps, "delta": delta}, noise="laplace")
    t = doc["tables"][0]
    t["partitions"] = {"type": "private", "strategy": strategy}
    t["metrics"] = ["privacy_unit_count"]
    t["bounds"] = {"max_partitions": l0, "max_rows_per_partition": 1}
    plan = plan_release(parse_spec(doc)).tables[0]
    assert plan.selection is not None
    return plan.selection, plan.units_noise


def _simulate_keep(
    sel: SelectionPlan, units_noise: NoiseParams | None, n_units: int, k: int
) -> np.ndarray:
    """Which of k partitions holding n_units units are kept, drawn as the pipeline draws them."""
    if n_units < sel.pre_threshold:
        return np.zeros(k, dtype=bool)
    if sel.table is not None:
        hi = np.array(sel.table.hi, dtype=np.uint64)
        lo = np.array(sel.table.lo, dtype=np.uint64)
        return bernoulli_table(streams(k), np.full(k, n_units), hi, lo)
    noise = sel.noise or units_noise
    assert noise is not None
    draw = discrete_laplace if noise.mechanism == "discrete_laplace" else discrete_gaussian
    z = draw(streams(k), noise.parameter)
    return (n_units - sel.pre_threshold + 1) + z >= sel.threshold


@pytest.mark.parametrize("strategy", ["laplace", "truncated_geometric", "post_aggregation"])
def test_keep_rates_match_the_claimed_probabilities_at_a_million_partitions(strategy: str) -> None:
    sel, units = _selection_plan(strategy)
    n50 = sel.units_for_even_odds(units)
    for n_units, k in ((1, 1_000_000), (n50 - 1, 200_000), (n50, 200_000), (n50 + 5, 200_000)):
        p = sel.keep_probability(n_units, units)
        kept = int(_simulate_keep(sel, units, n_units, k).sum())
        lo, hi = binomial_interval(k, p)
        assert lo <= kept <= hi, (strategy, n_units, kept, p * k)
    # a single-unit partition is the delta of selection: at most delta_adj
    assert sel.keep_probability(1, units) <= 1e-5


def test_keep_rate_test_catches_an_off_by_one_threshold() -> None:
    sel, units = _selection_plan("laplace")
    n50 = sel.units_for_even_odds(units)
    broken = dataclasses.replace(sel, threshold=sel.threshold - 1)  # a ">= T-1" bug
    kept = int(_simulate_keep(broken, units, n50, 200_000).sum())
    lo, hi = binomial_interval(200_000, sel.keep_probability(n50, units))
    assert not lo <= kept <= hi


def _tail_units(sel: SelectionPlan, units: NoiseParams | None, p: float = 1e-3) -> int:
    """The largest unit count kept with probability <= p: where keep-rate ratios reach e^eps."""
    n = sel.units_for_even_odds(units)
    while n > sel.pre_threshold and sel.keep_probability(n, units) > p:
        n -= 1
    return n


STRATEGIES = ["truncated_geometric", "laplace", "gaussian", "post_aggregation"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_selection_epsilon_lower_bound_and_control(strategy: str) -> None:
    sel, units = _selection_plan(strategy)
    # post_aggregation selects with the released unit count's noise: its epsilon is the claim
    claim = float(sel.epsilon) if sel.epsilon else float(units.epsilon if units else 0)
    assert claim > 0
    n = 400_000
    buggy = _selection_plan(strategy, eps=4.0)  # planted bug: built with 4x the epsilon
    for (plan, noise), must_exceed in (((sel, units), False), (buggy, True)):
        c = _tail_units(plan, noise)
        a = _simulate_keep(plan, noise, c + 1, n).astype(float)
        b = _simulate_keep(plan, noise, c, n).astype(float)
        bound = epsilon_lower_bound(a, b, [0.5], delta=float(sel.delta))
        assert (bound > claim) if must_exceed else (bound <= claim), (strategy, bound, claim)


def test_discrete_gaussian_epsilon_lower_bound_and_control() -> None:
    rho, delta = 0.125, 1e-3  # sigma = 2 for sensitivity 1
    claim = accounting.zcdp_epsilon(rho, delta)
    n = 400_000
    variance = gaussian_variance(1, rho)
    cuts = list(range(0, 9))
    d0 = discrete_gaussian(streams(n), variance)
    d1 = 1 + discrete_gaussian(streams(n), variance)
    assert epsilon_lower_bound(d1, d0, cuts, delta=delta) <= claim
    bad = gaussian_variance(1, 4 * rho)  # planted bug: sigma halved
    b0 = discrete_gaussian(streams(n), bad)
    b1 = 1 + discrete_gaussian(streams(n), bad)
    assert epsilon_lower_bound(b1, b0, cuts, delta=delta) > claim


def test_whole_pipeline_replicates_stay_within_the_claimed_epsilon(spark: Any) -> None:
    from pyspark.sql import functions as F

    from jobs.runner import public_keys
    from pipelines.release import Secrets, release_table

    # replicate partitions, each with one unit; the neighbour adds a unit breaking every bound
    k = 30_000
    eps = math.log(3)
    doc = base_spec(
        budget={"epsilon": eps},
        noise="laplace",
        domains={"g": list(range(k))},
        output={"path": "unused", "nonnegative_counts": False},
    )
    t = doc["tables"][0]
    t["metrics"] = ["count"]
    t["bounds"] = {"max_partitions": 1, "max_rows_per_partition": 1}
    spec = parse_spec(doc)
    plan = plan_release(spec).tables[0]
    base = spark.range(k).select(
        F.col("id").alias("pid"), F.col("id").alias("g"), F.lit(1.0).alias("v")
    )
    extra = spark.range(k * 3).select(
        (F.lit(10**9) + F.col("id") / 3).cast("long").alias("pid"),
        (F.col("id") / 3).cast("long").alias("g"),
        F.lit(9.0).alias("v"),
    )  # every replicate gets its own extra unit with 3 rows

    def counts(df: Any, tplan: Any) -> np.ndarray:
        keys = public_keys(spark, spec, tplan.table, df)
        out = release_table(df, tplan, "pid", Secrets.new(), keys, nonnegative=False)
        return out.select("count").toPandas()["count"].to_numpy()  # safe: test

    d0 = counts(base, plan)
    d1 = counts(base.unionByName(extra), plan)
    assert abs(d1.mean() - d0.mean() - 1) < 0.1  # Linf = 1: the extra unit adds exactly one row
    cuts = [-1, 0, 1, 2, 3]
    assert epsilon_lower_bound(d1, d0, cuts) <= eps
    halved = dataclasses.replace(
        plan,
        measurements=tuple(
            dataclasses.replace(m, parameter=m.parameter / 2) for m in plan.measurements
        ),
    )
    b0 = counts(base, halved)
    b1 = counts(base.unionByName(extra), halved)
    assert epsilon_lower_bound(b1, b0, cuts) > eps  # control: the planted bug is caught


def test_truncated_geometric_table_is_monotone_and_ends_at_one() -> None:
    sel, _ = _selection_plan("truncated_geometric", l0=5)
    table: TruncatedGeometric | None = sel.table
    assert table is not None
    probs = [table.keep_probability(n) for n in range(len(table.hi) + 2)]
    assert probs[0] == 0 and probs[-1] == 1
    assert all(a <= b for a, b in itertools.pairwise(probs))
    expected = truncated_geometric_probabilities(float(sel.epsilon), float(sel.delta), 5)
    assert all(
        table.keep_probability(n) == pytest.approx(float(p), rel=1e-12, abs=1e-30)
        for n, p in enumerate(expected)
    )
