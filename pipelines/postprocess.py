"""Post-processing of noisy measurements into the released metric columns (costs no budget).

Input: ``(dims..., count, privacy_unit_count, s_<col>...)`` holding noisy integers.
Output: ``(dims..., <metric>...)`` in the order the spec lists the metrics:

* ``count`` and ``privacy_unit_count``: the noisy integer, clamped at zero if asked;
* ``sum_<col>``: (noisy centered grid sum + center * noisy count) times the granularity;
* ``mean_<col>``: (center + noisy centered sum / max(noisy count, 1)) times the granularity,
  clamped to the column's bounds.

Sums and means use the noisy count before any clamping at zero.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.aggregation import COUNT, UNITS
from pipelines.plan import TablePlan
from pipelines.spec import MetricSpec


def _metric(m: MetricSpec, plan: TablePlan, nonnegative: bool) -> Column:
    if m.kind in ("count", "privacy_unit_count"):
        c = F.col(COUNT if m.kind == "count" else UNITS)
        return (F.greatest(c, F.lit(0)) if nonnegative else c).cast("long")
    v = next(x for x in plan.values if x.column == m.column)
    centered = F.col(v.sum_name).cast("double")
    if m.kind == "sum":
        if v.center == 0:
            return centered * F.lit(v.granularity)
        return (centered + F.lit(float(v.center)) * F.col(COUNT).cast("double")) * F.lit(
            v.granularity
        )
    grid_mean = F.lit(float(v.center)) + centered / F.greatest(F.col(COUNT), F.lit(1)).cast(
        "double"
    )
    mean = grid_mean * F.lit(v.granularity)
    return F.least(F.greatest(mean, F.lit(v.lower)), F.lit(v.upper))


def finalize(noisy: DataFrame, plan: TablePlan, nonnegative: bool) -> DataFrame:
    dims = list(plan.table.dimensions)
    metrics = [_metric(m, plan, nonnegative).alias(m.output_name) for m in plan.table.metrics]
    return noisy.select(*dims, *metrics)
