"""Contribution bounding per privacy unit, chosen uniformly at random by a salted keyed hash.

Shapes after each step (one row means ...):

1. ``(unit, dims..., q_<col>...)``: one input row, values clamped and on the fixed-point grid;
2. at most ``Linf`` rows per ``(unit, partition)``, the ones with the smallest salted hash;
3. ``(unit, dims..., rows, s_<col>...)``: one row per ``(unit, partition)``;
4. at most ``L0`` of those per unit, again the smallest salted hash of ``(unit, partition)``.

The hash covers the unit, the partition and the row's values, seeded with a secret per-run salt:
the choice is a function of the unit's own rows only (so the sensitivity holds), uniform over
them, and identical if Spark recomputes a task (so a retry cannot keep a different sample).
Duplicate rows tie, but they are interchangeable. L0 is taken over distinct partitions after the
per-partition aggregation, so heavy partitions are not favoured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

ROWS = "rows"


@dataclass(frozen=True)
class ValueColumn:
    """A numeric column clamped to ``[lower, upper]`` and put on a grid of ``granularity``.

    ``center`` (grid units) is subtracted from every grid value before summing. When the table
    measures the row count anyway, centering on the middle of the bounds halves the sum's
    sensitivity for bounds like ``[0, U]``; the sum is restored by post-processing
    (``centered sum + center * count``).
    """

    column: str
    lower: float
    upper: float
    granularity: float
    center: int = 0

    @property
    def grid_name(self) -> str:
        return f"q_{self.column}"

    @property
    def sum_name(self) -> str:
        return f"s_{self.column}"

    def grid_value(self) -> Column:
        clamped = F.least(
            F.greatest(F.col(self.column).cast("double"), F.lit(self.lower)), F.lit(self.upper)
        )
        return F.round(clamped / F.lit(self.granularity)).cast("long") - F.lit(self.center)


def _salted_hash(salt: tuple[int, int], columns: Sequence[Column]) -> Column:
    return F.xxhash64(F.lit(salt[0]), F.lit(salt[1]), *columns)


def bound_contributions(
    df: DataFrame,
    unit: str,
    dims: Sequence[str],
    values: Sequence[ValueColumn],
    max_partitions: int,
    max_rows: int,
    salt: tuple[int, int, int, int],
) -> DataFrame:
    """Bounded per-(unit, partition) contributions: ``(unit, dims..., rows, s_<col>...)``.

    ``salt`` is four secret 64-bit integers for this run (see :func:`new_salt`), never logged.
    """
    keys = [unit, *dims]
    rows = df.select(
        *[F.col(k) for k in keys], *[v.grid_value().alias(v.grid_name) for v in values]
    )
    prio_row = _salted_hash(salt[:2], [F.col(c) for c in rows.columns])
    by_pair = Window.partitionBy(*keys).orderBy(prio_row)
    kept_rows = rows.withColumn("_rank", F.row_number().over(by_pair)).where(
        F.col("_rank") <= max_rows
    )
    pairs = kept_rows.groupBy(*keys).agg(
        F.count(F.lit(1)).alias(ROWS), *[F.sum(v.grid_name).alias(v.sum_name) for v in values]
    )
    prio_pair = _salted_hash(salt[2:], [F.col(k) for k in keys])
    by_unit = Window.partitionBy(unit).orderBy(prio_pair)
    return (
        pairs.withColumn("_rank", F.row_number().over(by_unit))
        .where(F.col("_rank") <= max_partitions)
        .drop("_rank")
    )
