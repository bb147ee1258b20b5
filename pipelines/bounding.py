"""Contribution bounding per privacy unit, chosen uniformly at random by a salted keyed hash.

Output: the kept input rows, ``(unit, dims..., q_<col>..., first)``: at most ``L0`` partitions per
unit, at most ``Linf`` rows per (unit, partition), values clamped and on the fixed-point grid;
``first`` is 1 on exactly one kept row of each kept (unit, partition) pair (so summing it counts
distinct units per partition).

How the rows are chosen: each (unit, partition) pair gets the priority
``hash(salt_b, unit, partition)`` and each row ``hash(salt_a, unit, partition, values)``. A unit
keeps its ``L0`` pairs of smallest priority, and in each its ``Linf`` rows of smallest priority.
The priorities are functions of the unit's own rows only (so the sensitivity holds), uniform over
them given the secret per-run salt, and the same if Spark recomputes a task (so a retry cannot keep
another sample). L0 ranks distinct pairs, so partitions with many rows are not favoured.
Duplicate rows tie, but they are interchangeable.

Two physical plans, the same choice:

* ``L0 = Linf = 1``: one aggregation per unit, ``min_by(column, key)`` for each column, with
  map-side partial aggregation and no window. When every column is fixed-width (the release
  passes cell identities, :mod:`pipelines.cells`, instead of dimension values) Spark runs it as a
  hash aggregation, without sorting. ``key`` packs the top 32 bits of the pair priority above
  the top 32 bits of the row priority, so it orders by pair first, then by row; priorities that
  tie in 32 bits (probability 2^-32 per pair of candidates) only perturb uniformity, never a
  bound (tied rows may give the unit's one row its columns from different rows of that unit:
  still one row, with clamped values);
* otherwise: one shuffle by unit and one sort by (unit, pair priority, partition, row priority)
  that serves both rankings (``row_number`` within the pair, ``dense_rank`` of pairs in the unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

FIRST = "first"


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
    extra: Sequence[str] = (),
) -> DataFrame:
    """Kept rows ``(unit, dims..., q_<col>..., extra..., first)``; see the module docstring.

    ``salt`` is four secret 64-bit integers for this run, never logged. ``extra``: columns of
    ``df`` kept as they are with each chosen row (histogram bin indexes).
    """
    keys = [F.col(unit), *[F.col(d) for d in dims]]
    grid = [v.grid_value().alias(v.grid_name) for v in values]
    pair_prio = _salted_hash(salt[2:], keys)
    out_cols = [unit, *dims, *[v.grid_name for v in values], *extra]
    if max_partitions == 1 and max_rows == 1:
        if len(out_cols) == 1:  # a total of units: one row per unit, nothing to choose
            return df.select(unit).distinct().select(unit, F.lit(1).alias(FIRST))
        # the row of least key: pair priority in the high half (the cell), row priority below
        payload = [*[v.grid_value() for v in values], *[F.col(c) for c in extra]]
        row_prio = _salted_hash(salt[:2], [*keys, *payload])
        key = F.shiftleft(F.shiftright(pair_prio, 32), 32).bitwiseOR(
            F.shiftrightunsigned(row_prio, 32)
        )
        keyed = df.select(*keys, *grid, *[F.col(c) for c in extra], key.alias("_key"))
        return keyed.groupBy(unit).agg(
            *[F.min_by(c, "_key").alias(c) for c in out_cols[1:]], F.max(F.lit(1)).alias(FIRST)
        )
    rows = df.select(*keys, *grid, *[F.col(c) for c in extra])
    q_cols = [F.col(v.grid_name) for v in values] + [F.col(c) for c in extra]
    row_prio = _salted_hash(salt[:2], [*keys, *q_cols])
    ranked = (
        rows.repartition(unit)
        .withColumn("_pp", pair_prio)
        .withColumn("_rp", row_prio)
        .withColumn(
            "_ri", F.row_number().over(Window.partitionBy(unit, "_pp", *dims).orderBy("_rp"))
        )
        .where(F.col("_ri") <= max_rows)
        .withColumn("_pi", F.dense_rank().over(Window.partitionBy(unit).orderBy("_pp", *dims)))
        .where(F.col("_pi") <= max_partitions)
    )
    return ranked.select(*out_cols, (F.col("_ri") == 1).cast("int").alias(FIRST))
