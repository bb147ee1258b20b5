"""The input's schema against the spec: missing columns and wrong types, from metadata alone.

Raises :class:`~dp_ops.errors.InputDataError` naming the column; no data value appears in a
message. Row-level checks (nulls, NaN, domains) are expectations in :mod:`pipelines.validation`.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
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
