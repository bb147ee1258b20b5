"""Checks of a released table as written, before the release is committed.

The staged table is read back and must have exactly the columns the spec implies, with the types
the job produced, no null key, no null or NaN metric, no negative count when counts are clamped,
and keys inside the public domain (the public key set, or the declared domains of the
dimensions). A failure is a bug, not a user error: :class:`~dp_ops.errors.InternalError` aborts
the release before the commit rename, so nothing becomes visible. Messages name tables and
columns only: what is checked is released (noisy) data, but a broken table may not be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.errors import InternalError
from pipelines.plan import error_columns
from pipelines.spec import TableSpec

COUNT_METRICS = ("count", "privacy_unit_count", "histogram")


def expected_columns(table: TableSpec, dims: Sequence[str] | None = None) -> list[str]:
    """Columns of an output of ``table`` (``dims``: a level's dimensions, default the table's)."""
    metrics = [name for m in table.metrics for name in m.output_names]
    if table.levels:  # consistent levels carry per-cell error columns
        metrics = [c for m in metrics for c in (m, *error_columns(m))]
    return [*(table.dimensions if dims is None else dims), *metrics]


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
    flags: dict[str, Column] = {"cells": F.count(F.lit(1))}
    for d in dims:
        flags[f"null key {d!r}"] = F.max(F.col(d).isNull().cast("int"))
        if d in domains and public_keys is None:
            outside = ~F.coalesce(F.col(d).isin(*domains[d]), F.lit(False))
            flags[f"key {d!r} outside its declared domain"] = F.max(outside.cast("int"))
    counts = {n for m in table.metrics if m.kind in COUNT_METRICS for n in m.output_names}
    for column in expected[len(dims) :]:
        c = F.col(column)
        bad = c.isNull()
        if isinstance(got[column], T.FloatType | T.DoubleType):
            bad = bad | F.isnan(c) | c.isin(float("inf"), float("-inf"))
        flags[f"null or non-finite metric {column!r}"] = F.max(bad.cast("int"))
        if (nonnegative_counts or table.levels) and column in counts:
            flags[f"negative count {column!r}"] = F.max((c < 0).cast("int"))
    row = staged.agg(*[v.alias(f"f{i}") for i, v in enumerate(flags.values())]).first()
    if row is None:
        raise InternalError("an aggregation without grouping returned no row")
    for i, problem in enumerate(flags):
        if problem != "cells" and row[f"f{i}"]:
            raise _fail(name, problem)
    cells = int(row["f0"])  # safe: the size of the released (noisy) table
    if dims and staged.groupBy(*dims).count().where(F.col("count") > 1).limit(1).count():
        raise _fail(name, "a key is released more than once")
    if public_keys is not None and dims:
        keys = public_keys.select(*dims).distinct()
        if staged.join(keys, on=dims, how="left_anti").limit(1).count():
            raise _fail(name, "a released key is not in the table's public key set")
        if cells != keys.count():  # public keys: every one is released, once
            raise _fail(name, "not every public key is released")
    if not dims and cells != 1:
        raise _fail(name, "a table without dimensions must have exactly one row")
    return cells
