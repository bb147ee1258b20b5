"""Which partitions a table releases: public keys, or keys selected privately from the data.

Public keys are given, never read from the microdata: a cross product of declared domains, an
inline list, or a file that :mod:`jobs` reads. Every public key is released (cells absent from the
data get zeros, then noise) and data cells outside the public keys are dropped.

Declared keys are checked against the input's column types in Python and sent to Spark as small
Arrow tables, so building them starts no Spark job and no Python worker. Up to
``LOCAL_MAX_KEYS`` declared keys also stay on the driver (:class:`PublicKeys`), where the release
fills in and noises their cells without a join in Spark (:mod:`pipelines.release`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.errors import SpecError
from pipelines.cells import CELL_ID
from pipelines.spark_compat import arrow_frame

INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
LOCAL_MAX_KEYS = 100_000
"""Declared key sets of up to this many keys are kept on the driver too (see the docstring)."""


@dataclass(frozen=True)
class PublicKeys:
    """A table's public keys, each once: in Spark, and on the driver as well when few.

    ``frame``: ``(dims...)`` typed like the input's columns. ``rows``: the same keys in the same
    types as an Arrow table, when they were declared in the spec (inline or as a cross product)
    and number at most ``LOCAL_MAX_KEYS``; ``None`` for a key file or a larger set.
    """

    frame: DataFrame
    rows: pa.Table | None = None


ARROW_TYPES: dict[type[T.DataType], pa.DataType] = {
    T.StringType: pa.string(),
    T.LongType: pa.int64(),
    T.IntegerType: pa.int32(),
    T.ShortType: pa.int16(),
    T.ByteType: pa.int8(),
    T.BooleanType: pa.bool_(),
    T.DateType: pa.date32(),
}


def convert_key(value: Any, dtype: T.DataType, where: str) -> Any:
    """A declared key value as the Python value of the input column's type, or a SpecError."""

    def bad() -> SpecError:
        return SpecError(
            f"{where}: {value!r} is not a valid {dtype.simpleString()} key for this input"
        )

    if value is None:
        raise bad()
    if isinstance(dtype, T.StringType):
        if isinstance(value, bool | list | dict):
            raise bad()
        return str(value)
    if isinstance(dtype, INTEGRAL):
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise bad()
    if isinstance(dtype, T.BooleanType):
        if isinstance(value, bool):
            return value
        raise bad()
    if isinstance(dtype, T.DateType):
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise bad() from None
    raise bad()


def typed_domains(
    domains: Sequence[tuple[str, Sequence[Any]]], schema: T.StructType
) -> list[tuple[str, list[Any]]]:
    typed: list[tuple[str, list[Any]]] = []
    for name, values in domains:
        dtype = schema[name].dataType
        converted = [convert_key(v, dtype, f"domains.{name}") for v in values]
        typed.append((name, list(dict.fromkeys(converted))))  # each value once
    return typed


def declared_cells(
    domains: Sequence[tuple[str, Sequence[Any]]], schema: T.StructType
) -> pa.Table | None:
    """All combinations of the declared domains as an Arrow table on the driver, typed like the
    input's columns; None when there are more than ``LOCAL_MAX_KEYS``."""
    return combinations(typed_domains(domains, schema), schema)


def combinations(typed: list[tuple[str, list[Any]]], schema: T.StructType) -> pa.Table | None:
    """Every combination of already typed values, in order (the last column fastest), as Arrow
    typed like the input; None beyond ``LOCAL_MAX_KEYS``."""
    if math.prod(len(values) for _, values in typed) > LOCAL_MAX_KEYS:
        return None
    combos = list(itertools.product(*[values for _, values in typed]))
    return _arrow_rows([name for name, _ in typed], combos, schema)


def cross_product_keys(
    spark: SparkSession, domains: Sequence[tuple[str, Sequence[Any]]], schema: T.StructType
) -> PublicKeys:
    """All combinations of the declared domains, typed like the input's dimension columns."""
    typed = typed_domains(domains, schema)
    frames = [local_frame(spark, {name: values}, schema) for name, values in typed]
    keys = frames[0]
    for frame in frames[1:]:
        keys = keys.crossJoin(frame)
    return PublicKeys(keys, combinations(typed, schema))


def cross_rows(left: pa.Table, right: pa.Table) -> pa.Table:
    """Every row of ``left`` with every row of ``right`` (``left``'s rows slowest)."""
    n, m = left.num_rows, right.num_rows
    repeat = pa.array(np.repeat(np.arange(n), m))
    tile = pa.array(np.tile(np.arange(m), n))
    columns = {c: left.column(c).take(repeat) for c in left.column_names}
    columns.update({c: right.column(c).take(tile) for c in right.column_names})
    return pa.table(columns)


def local_frame(
    spark: SparkSession, columns: dict[str, list[Any]], schema: T.StructType
) -> DataFrame:
    """A small driver-side table sent to Spark through Arrow (no Python workers)."""
    fields = T.StructType([T.StructField(n, schema[n].dataType) for n in columns])
    types = [ARROW_TYPES.get(type(f.dataType)) for f in fields.fields]
    if all(t is not None for t in types):  # no pandas: its import alone takes a quarter second
        arrays = [pa.array(v, type=t) for v, t in zip(columns.values(), types, strict=True)]
        return arrow_frame(spark, pa.table(arrays, names=list(columns)), fields)
    import pandas as pd  # other types (decimals, timestamps): through pandas, as Spark converts

    return spark.createDataFrame(pd.DataFrame(columns), fields)


def _arrow_rows(
    dims: Sequence[str], rows: Sequence[Sequence[Any]], schema: T.StructType
) -> pa.Table:
    arrays = {
        d: pa.array([row[j] for row in rows], type=ARROW_TYPES[type(schema[d].dataType)])
        for j, d in enumerate(dims)
    }
    return pa.table(arrays)


def inline_keys(
    spark: SparkSession, dims: Sequence[str], rows: Sequence[Sequence[Any]], schema: T.StructType
) -> PublicKeys:
    """The spec's list of keys, converted to the input's types, each once (first place kept)."""
    typed = list(
        dict.fromkeys(
            tuple(
                convert_key(row[j], schema[d].dataType, f"partitions.keys[{i}]")
                for j, d in enumerate(dims)
            )
            for i, row in enumerate(rows)
        )
    )
    columns = {d: [row[j] for row in typed] for j, d in enumerate(dims)}
    frame = local_frame(spark, columns, schema)
    if len(typed) > LOCAL_MAX_KEYS:
        return PublicKeys(frame)
    return PublicKeys(frame, _arrow_rows(dims, typed, schema))


def cast_keys(keys: DataFrame, schema: T.StructType, dims: Sequence[str]) -> PublicKeys:
    """Public keys from a file, cast to the input's types; a key that does not fit is an error."""
    missing = [d for d in dims if d not in keys.columns]
    if missing:
        raise SpecError(f"public partitions: column {missing[0]!r} is missing from the key file")
    cast = keys.select(*[F.col(d).cast(schema[d].dataType).alias(d) for d in dims])
    flags = [F.max((F.col(d).isNull()).cast("int")).alias(d) for d in dims]
    bad = cast.agg(*flags).first()  # safe: flags over the public key file only
    for d in dims:
        if bad is not None and bad[d]:
            raise SpecError(
                f"public partitions: a key of {d!r} is empty or does not convert to the input's "
                f"type {schema[d].dataType.simpleString()}"
            )
    return PublicKeys(cast.dropDuplicates(list(dims)))


def join_public(
    aggregated: DataFrame, keys: DataFrame | None, dims: Sequence[str], measures: Sequence[str]
) -> DataFrame:
    """Every public key once, with its aggregates (zero where the data has no such cell).

    ``keys`` and ``aggregated`` meet on the cell identity columns (:mod:`pipelines.cells`); cells
    of the data outside the keys are dropped. Without dimensions the table is one total cell:
    ``aggregated`` has exactly one row.
    """
    filled = [F.coalesce(F.col(m), F.lit(0)).cast("long").alias(m) for m in measures]
    if not dims or keys is None:
        return aggregated.select(*filled)
    joined = keys.join(aggregated, on=CELL_ID, how="left")  # keys are kept: no broadcast
    return joined.select(*dims, *filled)
