"""Aggregation per partition of the bounded rows.

Input: the kept rows from :func:`pipelines.bounding.bound_contributions`.
Output: one row per partition present in the data,
``(dims..., count, privacy_unit_count, s_<col>...)``: exact integers, not yet private.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame

from pipelines import sql_text as sql
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
    sums = [sql.expr(f"CAST(sum({sql.name(v.grid_name)}) AS BIGINT)", v.sum_name) for v in values]
    sums += [sql.expr(f"CAST(sum({sql.name(c)}) AS BIGINT)", name) for c, name in extra_sums]
    counts = [
        sql.expr(f"sum(CAST({sql.name(index)} = {i} AS BIGINT))", name)
        for index, names in bins
        for i, name in enumerate(names)
    ]
    aggs = [
        sql.expr("count(1)", COUNT),
        sql.expr(f"CAST(sum({sql.name(FIRST)}) AS BIGINT)", UNITS),
        *sums,
        *counts,
    ]
    if dims:
        return bounded.groupBy(*[sql.expr(sql.name(d)) for d in dims]).agg(*aggs)
    return bounded.agg(*aggs)


def measure_columns(values: Sequence[ValueColumn]) -> list[str]:
    return [COUNT, UNITS, *[v.sum_name for v in values]]
