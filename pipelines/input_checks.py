"""Checks that the microdata matches the spec, before any budget is spent.

One Spark pass computes a flag per problem (never a count), and the first problem found raises
:class:`~dp_ops.errors.InputDataError` naming the column. No data value and no count appears in a
message, so the error can go to any log. Great-expectations validation and quarantine of bad rows
build on these predicates.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.errors import InputDataError
from pipelines.spec import ReleaseSpec

NUMERIC = (
    T.ByteType,
    T.ShortType,
    T.IntegerType,
    T.LongType,
    T.FloatType,
    T.DoubleType,
    T.DecimalType,
)
KEY_TYPES = (*NUMERIC[:4], T.StringType, T.BooleanType, T.DateType)


def required_columns(spec: ReleaseSpec) -> dict[str, str]:
    """Column -> role ('privacy unit', 'dimension' or 'value') for every column the spec uses."""
    roles = {spec.input.privacy_unit: "privacy unit"}
    for table in spec.tables:
        for d in table.dimensions:
            roles.setdefault(d, "dimension")
        for m in table.metrics:
            if m.column is not None:
                roles.setdefault(m.column, "value")
    return roles


def check_schema(df: DataFrame, spec: ReleaseSpec) -> None:
    """Missing columns and wrong types: metadata only, no Spark job."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    for column, role in required_columns(spec).items():
        if column not in fields:
            raise InputDataError(
                f"input: {role} column {column!r} is missing; the input has {sorted(fields)}"
            )
        dtype = fields[column]
        if role == "value" and not isinstance(dtype, NUMERIC):
            raise InputDataError(
                f"input: value column {column!r} must be numeric, it is {dtype.simpleString()}; "
                "cast it in the data or in a view before the release"
            )
        if role != "value" and not isinstance(dtype, KEY_TYPES):
            raise InputDataError(
                f"input: {role} column {column!r} has type {dtype.simpleString()}; use a string, "
                "integer, boolean or date column"
            )


def check_values(df: DataFrame, spec: ReleaseSpec) -> None:
    """Empty input, nulls, NaN and infinities, in one aggregation pass."""
    flags: dict[str, Column] = {"empty": F.count(F.lit(1)) == 0}
    for column, role in required_columns(spec).items():
        flags[f"null:{column}"] = F.max(F.col(column).isNull().cast("int")) == 1
        if role == "value" and isinstance(df.schema[column].dataType, T.FloatType | T.DoubleType):
            bad = F.isnan(column) | F.col(column).isin(float("inf"), float("-inf"))
            flags[f"nonfinite:{column}"] = F.max(bad.cast("int")) == 1
    row = df.agg(*[c.alias(name) for name, c in flags.items()]).first()  # safe: booleans only
    if row is None or row["empty"]:
        raise InputDataError("input: no rows; check input.path and any filter on the data")
    roles = required_columns(spec)
    for name in flags:
        if name == "empty" or not row[name]:
            continue
        kind, column = name.split(":", 1)
        if kind == "null":
            raise InputDataError(
                f"input: {roles[column]} column {column!r} has null values; drop or impute them "
                "before the release (every row needs a privacy unit, dimensions and values)"
            )
        raise InputDataError(
            f"input: value column {column!r} has NaN or infinite values; drop or fix them"
        )
