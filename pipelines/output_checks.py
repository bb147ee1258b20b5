"""Checks of a released table as written, before the release is committed.

The written table is read back and must have exactly the columns the spec implies, with the types
the job produced, no null key, no null or NaN metric, no negative count when counts are clamped,
and keys inside the public domain (the public key set, or the declared domains of the
dimensions). A failure is a bug, not a user error: :class:`~dp_ops.errors.InternalError` aborts
the release before its manifest (the commit) is written, so nothing is published. Messages name
tables and columns only: what is checked is released (noisy) data, but a broken table may not be.

Two checkers apply the same rules: :func:`check_released` on a DataFrame of the written files (any
size, any type), and :func:`check_released_arrow` on the written files read on the driver as an
Arrow table, for the small Parquet tables most releases write, in milliseconds instead of a Spark
job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.errors import InternalError
from pipelines.partitions import ARROW_TYPES
from pipelines.plan import error_columns
from pipelines.spec import TO_DATE, TableSpec

COUNT_METRICS = ("count", "privacy_unit_count", "histogram")


def expected_columns(table: TableSpec, dims: Sequence[str] | None = None) -> list[str]:
    """Columns of an output of ``table`` (``dims``: a level's dimensions, default the table's)."""
    metrics = [name for m in table.metrics for name in m.output_names]
    if table.consistent:  # levels and suites carry per-cell error columns
        metrics = [c for m in metrics for c in (m, *error_columns(m))]
    if table.to_date:  # a series: each metric, then each total to date
        metrics = [*metrics, *(m + TO_DATE for m in metrics)]
    return [*(table.dimensions if dims is None else dims), *metrics]


def count_columns(table: TableSpec) -> set[str]:
    """The released columns of ``table`` that count (and so are never negative when clamped)."""
    counts = {n for m in table.metrics if m.kind in COUNT_METRICS for n in m.output_names}
    return counts | {n + TO_DATE for n in counts} if table.to_date else counts


def _fail(name: str, problem: str) -> InternalError:
    return InternalError(
        f"output check of table {name!r}: {problem}; the release was not committed "
        "(nothing was published). This is a bug: please report it"
    )


def check_released(
    staged: DataFrame,
    produced: T.StructType,
    table: TableSpec,
    public_keys: DataFrame | None,
    domains: dict[str, Sequence[Any]],
    nonnegative_counts: bool,
    output: tuple[str, Sequence[str]] | None = None,
) -> int:
    """Check the staged table; return its number of rows (the released, noisy, cell count).

    ``produced``: the schema the job computed; ``public_keys``: the table's public key set (None
    for private partitions); ``domains``: declared domains of the dimensions, converted to the
    input's types; ``output``: (name, dimensions) of one of the table's consistent levels.
    """
    name, dims = output if output is not None else (table.name, table.dimensions)
    dims = list(dims)
    expected = expected_columns(table, dims)
    if staged.columns != expected:
        raise _fail(name, f"columns {staged.columns} instead of {expected}")
    got = {f.name: f.dataType for f in staged.schema.fields}
    for f in produced.fields:
        if got[f.name] != f.dataType:
            raise _fail(name, f"column {f.name!r} has type {got[f.name].simpleString()}")
    flags: dict[str, Column] = {}
    for d in dims:
        flags[f"null key {d!r}"] = F.col(d).isNull()
        if d in domains and public_keys is None:
            flags[f"key {d!r} outside its declared domain"] = ~F.coalesce(
                F.col(d).isin(*domains[d]), F.lit(False)
            )
    counts = count_columns(table)
    for column in expected[len(dims) :]:
        c = F.col(column)
        bad = c.isNull()
        if isinstance(got[column], T.FloatType | T.DoubleType):
            bad = bad | F.isnan(c) | c.isin(float("inf"), float("-inf"))
        flags[f"null or non-finite metric {column!r}"] = bad
        if (nonnegative_counts or table.consistent) and column in counts:
            flags[f"negative count {column!r}"] = c < 0
    cells, failed = _one_pass(staged, dims, flags, public_keys)
    if failed:
        raise _fail(name, failed)
    if not dims and cells != 1:
        raise _fail(name, "a table without dimensions must have exactly one row")
    return cells


def _one_pass(
    staged: DataFrame, dims: Sequence[str], flags: dict[str, Column], public_keys: DataFrame | None
) -> tuple[int, str | None]:
    """(rows of ``staged``, the first problem found or None), in one Spark job: the row flags,
    then (with dimensions) no key released twice and, with public keys, every released key one
    of them and every one of them released."""
    names = [f"f{i}" for i in range(len(flags))]
    per_row = [F.max(v.cast("int")).alias(n) for n, v in zip(names, flags.values(), strict=True)]
    if not dims:
        row = staged.agg(F.count(F.lit(1)).alias("_n"), *per_row).first()
        problems = list(flags)
    else:
        # per key: its rows and its flags; then over the keys
        per_key = staged.groupBy(*dims).agg(F.count(F.lit(1)).alias("_n"), *per_row)
        over_keys = {n: F.max(n).alias(n) for n in names}
        problems = [*flags, "a key is released more than once"]
        checks = [F.max((F.col("_n") > 1).cast("int"))]
        if public_keys is not None:
            keys = public_keys.select(*dims).distinct().withColumn("_k", F.lit(1))
            per_key = per_key.join(keys, on=list(dims), how="full_outer")
            problems += [
                "a released key is not in the table's public key set",
                "not every public key is released",
            ]
            checks += [
                F.max(F.col("_k").isNull().cast("int")),
                F.max(F.col("_n").isNull().cast("int")),
            ]
        extra = [c.alias(f"f{len(flags) + i}") for i, c in enumerate(checks)]
        row = per_key.agg(F.sum("_n").alias("_n"), *over_keys.values(), *extra).first()
    if row is None:
        raise InternalError("an aggregation without grouping returned no row")
    cells = int(row["_n"] or 0)  # safe: the size of the released (noisy) table
    failed = next((p for i, p in enumerate(problems) if row[f"f{i}"]), None)
    return cells, failed


ARROW_METRIC_TYPES: dict[type[T.DataType], pa.DataType] = {
    T.DoubleType: pa.float64(),
    T.FloatType: pa.float32(),
}


def arrow_type(dtype: T.DataType) -> pa.DataType | None:
    """The Arrow type a column of Spark type ``dtype`` reads back as from Spark's Parquet, for
    the types :func:`check_released_arrow` checks; None for the others."""
    return {**ARROW_TYPES, **ARROW_METRIC_TYPES}.get(type(dtype))


def check_released_arrow(
    staged: pa.Table,
    produced: T.StructType,
    table: TableSpec,
    public_keys: pa.Table | None,
    domains: dict[str, Sequence[Any]],
    nonnegative_counts: bool,
    output: tuple[str, Sequence[str]] | None = None,
) -> int:
    """:func:`check_released` on the staged table read on the driver; ``public_keys``: the
    table's public keys as Arrow (``PublicKeys.rows``), None for private partitions. Every
    column of ``produced`` must have an :func:`arrow_type`."""
    name, dims = output if output is not None else (table.name, table.dimensions)
    dims = list(dims)
    expected = expected_columns(table, dims)
    if staged.column_names != expected:
        raise _fail(name, f"columns {staged.column_names} instead of {expected}")
    for f in produced.fields:
        want = arrow_type(f.dataType)
        if want is None:
            raise InternalError(f"no Arrow check for columns of type {f.dataType.simpleString()}")
        if staged.schema.field(f.name).type != want:
            raise _fail(name, f"column {f.name!r} has type {staged.schema.field(f.name).type}")
    problems: list[tuple[str, bool]] = []
    for d in dims:
        column = staged.column(d)
        problems.append((f"null key {d!r}", column.null_count > 0))
        if d in domains and public_keys is None:
            values = pa.array(list(domains[d]), type=column.type)
            outside = pc.invert(pc.is_in(column, value_set=values))
            problems.append((f"key {d!r} outside its declared domain", _any(outside)))
    counts = count_columns(table)
    for column_name in expected[len(dims) :]:
        column = staged.column(column_name)
        bad = column.null_count > 0
        if pa.types.is_floating(column.type):
            bad = bad or _any(pc.is_nan(column)) or _any(pc.is_inf(column))
        problems.append((f"null or non-finite metric {column_name!r}", bad))
        if (nonnegative_counts or table.consistent) and column_name in counts:
            problems.append((f"negative count {column_name!r}", _any(pc.less(column, 0))))
    cells = int(staged.num_rows)  # safe: the size of the released (noisy) table
    if dims:
        released = staged.select(dims).group_by(dims).aggregate([])
        problems.append(("a key is released more than once", released.num_rows != cells))
        if public_keys is not None:
            declared = public_keys.select(dims).group_by(dims).aggregate([])
            outside = released.join(declared, keys=dims, join_type="left anti").num_rows
            problems.append(("a released key is not in the table's public key set", outside > 0))
            missing = declared.join(released, keys=dims, join_type="left anti").num_rows
            problems.append(("not every public key is released", missing > 0))
    failed = next((problem for problem, found in problems if found), None)
    if failed:
        raise _fail(name, failed)
    if not dims and cells != 1:
        raise _fail(name, "a table without dimensions must have exactly one row")
    return cells


def _any(mask: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a boolean mask holds a true value (nulls are not)."""
    return bool(pc.any(pc.fill_null(mask, False)).as_py())
