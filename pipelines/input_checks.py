"""The input's schema against the spec: missing columns and wrong types, from metadata alone.

Raises :class:`~dp_ops.errors.InputDataError` naming the column; no data value appears in a
message. Row-level checks (nulls, NaN, domains) are expectations in :mod:`pipelines.validation`.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from dp_ops.errors import SHOW_ERRORS_VARIABLE, InputDataError, show_errors
from pipelines.spec import CATEGORY_KINDS, ReleaseSpec

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
    """Column -> role ('privacy unit', 'dimension', 'value' or 'category') for every column the
    spec uses."""
    roles = {spec.input.privacy_unit: "privacy unit"}
    for table in spec.tables:
        for d in table.dimensions:
            roles.setdefault(d, "dimension")
        for m in table.metrics:
            if m.column is not None:
                roles.setdefault(m.column, "category" if m.kind in CATEGORY_KINDS else "value")
    return roles


def input_columns(fields: dict[str, T.DataType]) -> str:
    """The input's column names for a message, only when the operator asked to see text from the
    input: a CSV read without a header row takes its names from the first record."""
    if show_errors():
        return f"The input has {sorted(fields)}."
    return (
        "The input's own column names are not shown, since they may be data (a CSV without a "
        f"header row): set {SHOW_ERRORS_VARIABLE}=1 on a private console to list them."
    )


CSV_RECORD = "_dprelease_csv_record"
"""A CSV input's malformed records (wrong field count) as read, in Spark's corrupt-record column;
null for a well-formed record. Private: it holds the whole record."""
CSV_MALFORMED = "_dprelease_csv_malformed"
"""1 for a malformed CSV record, else 0: the column the expectation checks (see
:func:`jobs.io.read_table`)."""
INTERNAL = (CSV_RECORD, CSV_MALFORMED)


def has_rows(df: DataFrame) -> bool:
    """Whether ``df`` has a row (a flag, not a count)."""
    return bool(df.limit(1).count())


def no_rows() -> InputDataError:
    return InputDataError(
        "input: no rows; check input.path (or input.table) and any filter on the data"
    )


def check_schema(df: DataFrame, spec: ReleaseSpec) -> None:
    """Missing columns and wrong types: metadata only, no Spark job."""
    fields = {f.name: f.dataType for f in df.schema.fields if f.name not in INTERNAL}
    for column, role in required_columns(spec).items():
        if column not in fields:
            raise InputDataError(
                f"input: {role} column {column!r} is missing; check the spec's column names "
                "against the input's (for a CSV, its header row: input.csv_header). "
                + input_columns(fields)
            )
        dtype = fields[column]
        if isinstance(dtype, T.NullType):
            raise InputDataError(
                f"input: {role} column {column!r} has no type: the input holds no value for it "
                "(an empty or all-null file); give the column a type in the data"
            )
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
