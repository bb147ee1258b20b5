"""Input validation: the spec's expectations, a great-expectations verdict, invalid rows split off.

The expectation suite follows from the spec (:func:`input_rules`): the privacy unit, every
dimension and every value column not null; value columns numeric, and finite when they are
floating point; dimensions with a declared domain inside it; plus the spec's own
``input.expectations``. great-expectations gives one verdict per expectation
(:func:`gx_verdict`). It runs with ``BOOLEAN_ONLY`` results, so no count and no example value is
put into its result, and the result never leaves this module: callers get a pass/fail per rule
name, and rule names come from the spec, never from the data.

When a rule fails, the same rules as Spark predicates split the rows (:func:`split_invalid`): a
row is valid when it passes every rule, so valid and quarantined rows together are the input,
and nothing is lost. Dropping rows by a rule on their own values is a row-by-row filter: it costs
no privacy, the bounding that follows still holds.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any, Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.errors import SHOW_ERRORS_VARIABLE, InputDataError, InternalError, SpecError
from pipelines.input_checks import (
    CSV_MALFORMED,
    INTERNAL,
    NUMERIC,
    check_schema,
    has_rows,
    input_columns,
    no_rows,
    required_columns,
)
from pipelines.partitions import INTEGRAL, convert_key
from pipelines.spec import ReleaseSpec

log = logging.getLogger("dprelease")

FAILED_COLUMN = "_dprelease_failed_expectations"
"""Quarantined rows carry the names of the expectations they fail in this column."""

RuleKind = Literal["not_null", "numeric", "finite", "in_set", "between", "text"]
REPLACEMENT = "\ufffd"
"""U+FFFD, what Spark's CSV reader puts where a file's bytes are not valid UTF-8."""
MAX_DOUBLE = 1.7976931348623157e308


@dataclass(frozen=True)
class Rule:
    """One expectation on the input, as a great-expectations expectation and a Spark predicate."""

    name: str
    """Shown to operators; made from the spec only (column names and declared constraints)."""
    column: str
    kind: RuleKind
    values: tuple[Any, ...] = ()
    min_value: float | None = None
    max_value: float | None = None

    @property
    def row_level(self) -> bool:
        """False for column-level rules (type), which no single row can fail."""
        return self.kind != "numeric"

    def row_ok(self) -> Column:
        """True where the row passes (never null)."""
        c = F.col(self.column)
        if self.kind == "not_null":
            return c.isNotNull()
        if self.kind == "numeric":
            return F.lit(True)
        if self.kind == "text":
            return c.isNull() | ~c.contains(REPLACEMENT)
        if self.kind == "finite":
            ok = ~F.isnan(c) & ~c.isin(float("inf"), float("-inf"))
        elif self.kind == "in_set":
            ok = c.isin(*self.values)
        else:
            ok = F.lit(True)
            if self.min_value is not None:
                ok = ok & (c >= F.lit(self.min_value))
            if self.max_value is not None:
                ok = ok & (c <= F.lit(self.max_value))
        return c.isNull() | F.coalesce(ok, F.lit(False))

    def expectation(self) -> Any:
        gxe: Any = importlib.import_module("great_expectations.expectations")  # lazy: slow

        col = self.column
        if self.kind == "not_null":
            return gxe.ExpectColumnValuesToNotBeNull(column=col)
        if self.kind == "numeric":
            names = [t.__name__ for t in NUMERIC]
            return gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=names)
        if self.kind == "finite":  # NaN sorts above every double in Spark, so it fails too
            return gxe.ExpectColumnValuesToBeBetween(
                column=col, min_value=-MAX_DOUBLE, max_value=MAX_DOUBLE
            )
        if self.kind == "in_set":
            return gxe.ExpectColumnValuesToBeInSet(column=col, value_set=list(self.values))
        if self.kind == "text":
            return gxe.ExpectColumnValuesToNotMatchRegex(column=col, regex=REPLACEMENT)
        return gxe.ExpectColumnValuesToBeBetween(
            column=col, min_value=self.min_value, max_value=self.max_value
        )


def input_rules(spec: ReleaseSpec, schema: T.StructType) -> tuple[Rule, ...]:
    """The expectation suite of ``spec`` for an input with ``schema`` (checked by check_schema).

    Raises InputDataError for a spec expectation on a missing or unsuitable column, SpecError for a
    declared domain value that does not fit the column's type.
    """
    rules: list[Rule] = []
    fields = {f.name: f.dataType for f in schema.fields if f.name not in INTERNAL}
    csv = CSV_MALFORMED in schema.fieldNames()
    if csv:  # a record with too many or too few fields
        rules.append(Rule("well-formed CSV record (field count)", CSV_MALFORMED, "in_set", (0,)))
    for column, role in required_columns(spec).items():
        rules.append(Rule(f"{column} not null ({role})", column, "not_null"))
        dtype = fields[column]
        if csv and isinstance(dtype, T.StringType):  # bytes that are not UTF-8 became U+FFFD
            rules.append(Rule(f"{column} valid UTF-8 text", column, "text"))
        if role == "value":
            rules.append(Rule(f"{column} numeric", column, "numeric"))
            if isinstance(dtype, T.FloatType | T.DoubleType):
                rules.append(Rule(f"{column} finite (no NaN or infinity)", column, "finite"))
        domain = spec.domain(column)
        if role == "dimension" and domain is not None:
            values = tuple(convert_key(v, dtype, f"domains.{column}") for v in domain)
            rules.append(Rule(f"{column} in its declared domain", column, "in_set", values))
    answers = sorted(
        {m.column or "" for t in spec.tables for m in t.metrics if m.kind == "proportion"}
    )
    for column in answers:  # a proportion is a share of 0/1 answers
        if column in fields and isinstance(fields[column], NUMERIC):
            values = (0, 1) if isinstance(fields[column], INTEGRAL) else (0.0, 1.0)
            rules.append(
                Rule(f"{column} is 0 or 1 (a proportion's answers)", column, "in_set", values)
            )
    for i, e in enumerate(spec.input.expectations):
        where = f"input.expectations[{i}]"
        if e.column not in fields:
            raise InputDataError(
                f"{where}: column {e.column!r} is missing. " + input_columns(fields)
            )
        dtype = fields[e.column]
        if e.kind == "not_null":
            rules.append(Rule(f"{e.column} not null ({where})", e.column, "not_null"))
        elif e.kind == "in_set":
            values = tuple(
                convert_key(v, dtype, f"{where}.in_set")
                if isinstance(dtype, (*INTEGRAL, T.StringType, T.BooleanType, T.DateType))
                else v
                for v in e.values
            )
            rules.append(Rule(f"{e.column} in a set ({where})", e.column, "in_set", values))
        else:
            if not isinstance(dtype, NUMERIC):
                raise InputDataError(
                    f"{where}: 'between' needs a numeric column; {e.column!r} is "
                    f"{dtype.simpleString()}"
                )
            rules.append(
                Rule(
                    f"{e.column} between {e.min_value} and {e.max_value} ({where})",
                    e.column,
                    "between",
                    min_value=e.min_value,
                    max_value=e.max_value,
                )
            )
    return tuple(rules)


def _quiet_gx() -> None:
    """Analytics off; GX's loggers (some set their own level on import) at WARNING."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("great_expectations."):
            logging.getLogger(name).setLevel(logging.NOTSET)  # inherit WARNING


def load_great_expectations() -> None:
    """Import great-expectations, quietly. It takes seconds; a caller may run this early, in a
    thread, while the Spark session starts (the import lock makes a later import wait for it)."""
    _quiet_gx()
    importlib.import_module("great_expectations")
    importlib.import_module("great_expectations.expectations")
    _quiet_gx()


UNREADABLE_MARKS = (
    "FAILED_READ_FILE",  # Spark 4's error condition for a file that fails to read in a task
    "CANNOT_READ_FILE_FOOTER",  # Spark 3.4+: a Parquet footer that cannot be read
    "Encountered error while reading file",  # Spark 3.5's wrapper of a task's read error
    "is not a Parquet file",  # Parquet's own error, unwrapped on Spark 3.5
)
"""What Spark's error text says when a file of the input cannot be read as its format."""


def is_unreadable(error_text: str) -> bool:
    """Whether Spark's error text (never shown) says a file of the input failed to read."""
    return any(mark in error_text for mark in UNREADABLE_MARKS)


def unreadable_input() -> InputDataError:
    """A file of the input failed to read in a task (corrupt, truncated or another format)."""
    return InputDataError(
        "input: a file under input.path (or of input.table) cannot be read as its format "
        "(corrupt, truncated, or another format); check the files. Spark's message may quote "
        f"them: set {SHOW_ERRORS_VARIABLE}=1 on a private console to see it"
    )


def gx_verdict(df: DataFrame, rules: Sequence[Rule]) -> dict[str, bool]:
    """Validate ``df`` with great-expectations: rule name -> passed.

    An expectation great-expectations could not evaluate counts as failed; its exception text is
    not logged (it may quote data).
    """
    load_great_expectations()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_spark(name="input", persist=False)  # never cache the input
        .add_dataframe_asset(name="microdata")
        .add_batch_definition_whole_dataframe("all rows")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="release input"))
    by_id: dict[str, Rule] = {}
    for rule in rules:
        expectation = suite.add_expectation(rule.expectation())
        by_id[str(expectation.id)] = rule
    result = batch.get_batch(batch_parameters={"dataframe": df}).validate(
        suite, result_format="BOOLEAN_ONLY"
    )
    verdict: dict[str, bool] = {}
    for r in result.results:
        config = r.expectation_config
        matched = by_id.get(str(config.id)) if config is not None else None
        if matched is None:
            raise InternalError("great-expectations returned a result for an unknown expectation")
        rule = matched
        info = r.exception_info or {}
        # flat, or one entry per metric great-expectations could not compute
        entries = [info, *(v for v in info.values() if isinstance(v, dict))]
        raised = any(bool(e.get("raised_exception")) for e in entries)
        if raised and any(is_unreadable(str(e.get("exception_message", ""))) for e in entries):
            raise unreadable_input()
        if raised:
            log.warning("validation: an expectation could not be evaluated; it counts as failed")
        verdict[rule.name] = bool(r.success) and not raised
    if set(verdict) != {r.name for r in rules}:
        raise InternalError("great-expectations did not return a verdict for every expectation")
    return verdict


def spark_verdict(df: DataFrame, rules: Sequence[Rule]) -> dict[str, bool]:
    """The verdict of the same rules from Spark alone: rule name -> passed (see
    :func:`spark_pass`)."""
    return spark_pass(df, rules)[0]


def spark_pass(df: DataFrame, rules: Sequence[Rule]) -> tuple[dict[str, bool], bool]:
    """(rule name -> passed, whether ``df`` has any row), in one aggregation of the predicates
    that :func:`split_invalid` splits rows by (a column-level rule, which no row can fail,
    passes: the schema check has already held it). One bit per rule leaves Spark, and one for
    the input's emptiness, which a release refuses anyway."""
    row_level = [r for r in rules if r.row_level]
    checks = [F.min(r.row_ok().cast("int")).alias(f"r{i}") for i, r in enumerate(row_level)]
    try:
        row = df.agg(F.max(F.lit(1)).alias("any"), *checks).first()
    except Exception as exc:
        if is_unreadable(str(exc)):
            raise unreadable_input() from None
        raise
    if row is None:
        raise InternalError("an aggregation without grouping returned no row")
    failed = {r.name for i, r in enumerate(row_level) if row[f"r{i}"] == 0}  # null: no rows
    return {r.name: r.name not in failed for r in rules}, row["any"] is not None


def row_is_valid(rules: Sequence[Rule]) -> Column:
    checks = [r.row_ok() for r in rules if r.row_level]
    return reduce(lambda a, b: a & b, checks, F.lit(True))


def split_invalid(df: DataFrame, rules: Sequence[Rule]) -> tuple[DataFrame, DataFrame]:
    """(valid rows, invalid rows with the names of the rules they fail in FAILED_COLUMN)."""
    row_level = [r for r in rules if r.row_level]
    valid = row_is_valid(row_level)
    names = F.array(*[F.when(~r.row_ok(), F.lit(r.name)) for r in row_level])
    failed = F.filter(names, lambda x: x.isNotNull())
    return df.filter(valid), df.filter(~valid).withColumn(FAILED_COLUMN, failed)


def failure_message(failed: Sequence[str]) -> str:
    listed = ", ".join(repr(n) for n in failed)
    return (
        f"input: rows fail {len(failed)} expectation(s): {listed}. Fix the data, or set "
        "input.on_invalid: quarantine to set those rows aside and release the rest"
    )


@dataclass(frozen=True)
class ValidatedInput:
    valid: DataFrame
    """The rows the release uses (all of the input when every expectation passed)."""
    quarantined: DataFrame | None
    """The rows that fail, with FAILED_COLUMN (None when every expectation passed)."""
    verdict: dict[str, bool]
    """Expectation name -> passed, in suite order. Operator-only: it says whether any row failed."""

    @property
    def failed(self) -> list[str]:
        return [name for name, ok in self.verdict.items() if not ok]


def validate_input(df: DataFrame, spec: ReleaseSpec) -> ValidatedInput:
    """Check the schema, validate (great-expectations, or Spark alone with ``input.validator:
    spark``), apply ``input.on_invalid``.

    Raises InputDataError (naming columns and expectations, never values or counts) for a schema
    mismatch, for failed expectations under ``on_invalid: fail``, and for an input without
    (valid) rows.
    """
    try:
        check_schema(df, spec)
        rules = input_rules(spec, df.schema)
    except (InputDataError, SpecError):
        if not has_rows(df):  # files without rows carry no reliable types: say what is wrong
            raise no_rows() from None
        raise
    rows: bool | None = None  # whether the valid rows are not none, when already known
    if spec.input.validator == "spark":
        verdict, rows = spark_pass(df, rules)
    else:
        verdict = gx_verdict(df, rules)
    failed = [name for name, ok in verdict.items() if not ok]
    if failed and spec.input.on_invalid == "fail":
        raise InputDataError(failure_message(failed))
    quarantined = None
    if failed:
        df, quarantined = split_invalid(df, rules)
        rows = None
    if not (has_rows(df) if rows is None else rows):
        if quarantined is not None:
            raise InputDataError(
                f"input: no valid rows: every row fails {', '.join(repr(n) for n in failed)}"
            )
        raise no_rows()
    internal = [c for c in INTERNAL if c in df.columns]
    return ValidatedInput(df.drop(*internal) if internal else df, quarantined, verdict)
