"""Aggregation per partition of the bounded rows.

Input: the kept rows from :func:`pipelines.bounding.bound_contributions`.
Output: one row per partition present in the data,
``(dims..., count, privacy_unit_count, s_<col>...)``: exact integers, not yet private.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.bounding import FIRST, ValueColumn

COUNT = "count"
UNITS = "privacy_unit_count"


def aggregate_partitions(
    bounded: DataFrame,
    dims: Sequence[str],
    values: Sequence[ValueColumn],
    bins: Sequence[tuple[str, Sequence[str]]] = (),
    extra_sums: Sequence[tuple[str, str]] = (),
) -> DataFrame:
    """``bins``: (bin index column, output column per bin) of each histogram; ``extra_sums``:
    (input column, output column) summed as they are (squares for variances)."""
    sums = [F.sum(v.grid_name).cast("long").alias(v.sum_name) for v in values]
    sums += [F.sum(c).cast("long").alias(name) for c, name in extra_sums]
    counts = [
        F.sum((F.col(index) == i).cast("long")).alias(name)
        for index, names in bins
        for i, name in enumerate(names)
    ]
    aggs = [
        F.count(F.lit(1)).alias(COUNT),
        F.sum(FIRST).cast("long").alias(UNITS),
        *sums,
        *counts,
    ]
    if dims:
        return bounded.groupBy(*dims).agg(*aggs)
    return bounded.agg(*aggs)


def measure_columns(values: Sequence[ValueColumn]) -> list[str]:
    return [COUNT, UNITS, *[v.sum_name for v in values]]
