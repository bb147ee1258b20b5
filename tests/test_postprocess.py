"""Post-processing on the driver (numpy over Arrow) releases the bits Spark's post-processing
releases, for every metric kind, over noisy measurements that reach every branch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipelines.aggregation import COUNT, UNITS
from pipelines.plan import TablePlan, centered_grid_bounds, histograms, plan_release, squares
from pipelines.postprocess import finalize, finalize_table
from pipelines.release import all_measures
from pipelines.spec import parse_spec
from tests.conftest import base_spec

EVERY_KIND = [
    "count",
    "privacy_unit_count",
    {"sum": "v", "lower": -3, "upper": 250, "granularity": 0.01},
    {"mean": "v", "lower": -3, "upper": 250, "granularity": 0.01},
    {"variance": "v", "lower": -3, "upper": 250, "granularity": 0.01},
    {"stddev": "w", "lower": 0, "upper": 7.5, "granularity": 0.3},
    {"mean": "w", "lower": 0, "upper": 7.5, "granularity": 0.3},
    {"histogram": "v", "bins": [0, 10, 20, 50, 100]},
    {"quantiles": "w", "probabilities": [0.1, 0.5, 0.99], "lower": 0, "upper": 7.5, "bins": 7},
]
SUM_ONLY = [{"sum": "v", "lower": 0, "upper": 10, "granularity": 0.1}]  # uncentered sum


def plan_of(metrics: list[Any]) -> TablePlan:
    doc = base_spec(budget={"epsilon": 3.0, "delta": 1e-6})
    doc["tables"][0]["metrics"] = metrics
    return plan_release(parse_spec(doc)).tables[0]


def noisy_table(plan: TablePlan, rows: int, seed: int) -> pa.Table:
    """Noisy measurements as the driver holds them. Half the cells are plausible (sums and
    squares of values inside the bounds, so variances fall inside their clamps); the others
    are wild: counts around zero (negative, zero, positive), sums beyond 2^53 (where a long loses
    bits as a double), histogram bins that are all zero or negative."""
    rng = np.random.default_rng(seed)
    half = rows // 2
    count = rng.integers(-3, 40, rows)
    count[half : half + rows // 8] = rng.integers(-3, 2, rows // 8)
    columns: dict[str, Any] = {"g": [f"c{i}" for i in range(rows)], COUNT: count}
    n = np.maximum(count, 1)
    plausible_sums = {}
    for v in plan.values:
        lo, hi = centered_grid_bounds(v)
        wild = (rng.standard_normal(rows) * 2.0 ** rng.integers(0, 60, rows)).astype(np.int64)
        plausible = (n * rng.uniform(lo, hi, rows) * rng.uniform(0, 1, rows)).astype(np.int64)
        plausible_sums[v.sum_name] = plausible
        columns[v.sum_name] = np.where(np.arange(rows) < half, plausible, wild)
    for sq in squares(plan.table, plan.values):
        mean = plausible_sums[sq.value.sum_name] / n
        plausible = (n * (mean**2 + rng.uniform(-0.1, 2, rows) * mean**2) / sq.step).astype(int)
        wild = rng.integers(-(2**20), 2**40, rows)
        columns[sq.measure] = np.where(np.arange(rows) < half, plausible, wild)
    for h in histograms(plan.table):
        for i in range(h.bins):
            values = rng.integers(-3, 40, rows)
            values[half : half + rows // 8] = 0  # no count left: the middle of the range
            columns[h.count_column(i)] = values
    columns[UNITS] = rng.integers(-3, 40, rows)
    return pa.table({c: columns[c] for c in ["g", *all_measures(plan)]})


def bits(values: list[Any]) -> list[Any]:
    """Floats as their IEEE bit patterns: equality means the same double, sign of zero included."""
    return [np.float64(v).view(np.int64) if isinstance(v, float) else v for v in values]


@pytest.mark.parametrize("metrics", [EVERY_KIND, SUM_ONLY], ids=["every_kind", "uncentered_sum"])
@pytest.mark.parametrize("nonnegative", [True, False])
def test_the_driver_post_processes_to_the_bits_spark_releases(
    spark: Any, metrics: list[Any], nonnegative: bool
) -> None:
    plan = plan_of(metrics)
    assert plan.values[0].center != 0 or metrics is SUM_ONLY  # both sum formulas are reached
    noisy = noisy_table(plan, 400, seed=11)
    table, fields = finalize_table(noisy, plan, nonnegative)
    frame = spark.createDataFrame(noisy.to_pandas())
    released = finalize(frame, plan, nonnegative)
    assert [f.name for f in fields] == released.columns[1:]
    assert [f.dataType for f in fields] == [f.dataType for f in released.schema.fields[1:]]
    assert table.column_names == released.columns
    spark_rows = {r[0]: bits(list(r)) for r in released.collect()}
    driver_rows = {r[0]: bits(list(r)) for r in zip(*table.to_pydict().values(), strict=True)}
    assert driver_rows == spark_rows


def test_a_reassociated_formula_is_caught_bit_for_bit(spark: Any) -> None:
    """Control: the comparison above sees a one-ulp difference. The mean computed as
    ``center * g + centered / count * g`` (equal in exact arithmetic) differs in some cells."""
    plan = plan_of(EVERY_KIND)
    noisy = noisy_table(plan, 400, seed=11)
    v = plan.values[0]
    released = finalize(spark.createDataFrame(noisy.to_pandas()), plan, True)
    spark_means = {r["g"]: r["mean_v"] for r in released.collect()}
    count = np.maximum(noisy.column(COUNT).to_numpy(), 1).astype(np.float64)
    centered = noisy.column(v.sum_name).to_numpy().astype(np.float64)
    other = v.center * v.granularity + centered / count * v.granularity
    other = np.minimum(np.maximum(other, v.lower), v.upper)
    names = noisy.column("g").to_pylist()
    differ = [n for n, x in zip(names, other, strict=True) if bits([x]) != bits([spark_means[n]])]
    assert 0 < len(differ) < len(names)
