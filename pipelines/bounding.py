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

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipelines import sql_text as sql

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

    def grid_sql(self) -> str:
        """The row's value clamped to the bounds, on the grid, centered: a BIGINT (SQL text)."""
        value = f"CAST({sql.name(self.column)} AS DOUBLE)"
        clamped = f"least(greatest({value}, {sql.double(self.lower)}), {sql.double(self.upper)})"
        grid = sql.round_half_up(f"{clamped} / {sql.double(self.granularity)}")
        return f"({grid} - {sql.long(self.center)})"


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
    keys = [sql.name(c) for c in (unit, *dims)]
    grid = [sql.aliased(v.grid_sql(), v.grid_name) for v in values]
    pair_prio = sql.keyed_hash(salt[2:], keys)
    out_cols = [unit, *dims, *[v.grid_name for v in values], *extra]
    if max_partitions == 1 and max_rows == 1:
        if len(out_cols) == 1:  # a total of units: one row per unit, nothing to choose
            return df.selectExpr(keys[0]).distinct().selectExpr(keys[0], sql.aliased("1", FIRST))
        # the row of least key: pair priority in the high half (the cell), row priority below
        payload = [*[v.grid_sql() for v in values], *[sql.name(c) for c in extra]]
        row_prio = sql.keyed_hash(salt[:2], [*keys, *payload])
        key = f"shiftleft(shiftright({pair_prio}, 32), 32) | shiftrightunsigned({row_prio}, 32)"
        keyed = df.selectExpr(*keys, *grid, *[sql.name(c) for c in extra], f"{key} AS _key")
        return keyed.groupBy(sql.expr(keys[0])).agg(
            *[sql.expr(f"min_by({sql.name(c)}, _key)", c) for c in out_cols[1:]],
            sql.expr("max(1)", FIRST),
        )
    rows = df.selectExpr(*keys, *grid, *[sql.name(c) for c in extra])
    q_cols = [sql.name(v.grid_name) for v in values] + [sql.name(c) for c in extra]
    row_prio = sql.keyed_hash(salt[:2], [*keys, *q_cols])
    by_cell = [keys[0], "_pp", *keys[1:]]
    ranked = (
        rows.repartition(keys[0])
        .selectExpr("*", f"{pair_prio} AS _pp", f"{row_prio} AS _rp")
        .withColumn("_ri", F.row_number().over(Window.partitionBy(*by_cell).orderBy("_rp")))
        .where(F.col("_ri") <= max_rows)
        .withColumn("_pi", F.dense_rank().over(Window.partitionBy(keys[0]).orderBy(*by_cell[1:])))
        .where(F.col("_pi") <= max_partitions)
    )
    return ranked.selectExpr(
        *[sql.name(c) for c in out_cols], sql.aliased("CAST(_ri = 1 AS INT)", FIRST)
    )
