"""What differs between the Spark sessions a release runs on: classic (py4j, Spark 3.5 and 4.x)
and Spark Connect (a gRPC client, Spark 4.x).

A Connect session has no ``sparkContext``, no JVM in this process and no RDDs; a release on it
uses only the DataFrame API, and stops its own Spark jobs by session tags instead of job tags.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import pyarrow as pa
from pyspark.sql import DataFrame


def is_connect(spark: Any) -> bool:
    """True for a Spark Connect session (``pyspark.sql.connect``), False for a classic one.

    On pyspark 4.1 a Connect session is not a subclass of :class:`pyspark.sql.SparkSession`, so
    this looks at the class's module rather than ``isinstance``."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def spark_major(spark: Any) -> int:
    """The major version of the Spark the session runs (the server's, for Connect)."""
    return int(str(spark.version).split(".", 1)[0])


def to_arrow(df: DataFrame) -> pa.Table:
    """``df`` collected to the driver as an Arrow table (``DataFrame.toArrow`` on Spark 4, classic
    or Connect; the same Arrow batches through PySpark's collector on Spark 3.5)."""
    collect = cast("Callable[[], pa.Table] | None", getattr(df, "toArrow", None))
    if collect is not None:
        return collect()
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema)  # timestamps in UTC, as Spark 4's toArrow gives them
    batches = cast(Any, df)._collect_as_arrow()  # Spark 3.5: what toPandas uses with Arrow
    if not batches:
        return schema.empty_table()
    # the batches' timestamps carry the session's time zone: the same instants, relabelled
    return pa.Table.from_batches(batches).cast(schema)


def inheritable_thread(spark: Any, target: Callable[[], None]) -> threading.Thread:
    """A thread that runs Spark jobs with the caller's job group, properties and tags (classic
    sessions; Spark 3.5 takes no session argument)."""
    from pyspark import InheritableThread

    if spark_major(spark) >= 4:
        return InheritableThread(target, session=spark)
    return InheritableThread(target)


def arrow_frame(spark: Any, table: pa.Table, schema: Any) -> DataFrame:
    """A DataFrame of an Arrow table on the driver (``createDataFrame`` takes Arrow on Spark 4;
    on Spark 3.5 the rows go as Python values, which keep integers, dates and nulls exact)."""
    if spark_major(spark) >= 4:
        frame: DataFrame = spark.createDataFrame(table, schema=schema)
        return frame
    names = table.column_names
    rows = [tuple(row[n] for n in names) for row in table.to_pylist()]
    frame = spark.createDataFrame(rows, schema=schema)
    return frame


PLAN_STRING_LIMIT = 1_000_000
"""Characters of a query plan's text Spark builds for its UI and logs during a suite release."""


def bound_plan_strings(spark: Any) -> None:
    """Make Spark build at most PLAN_STRING_LIMIT characters of a plan's text
    (``spark.sql.maxPlanStringLength``, unbounded by default) in this session, unless the
    session already has a lower limit. The setting stays: the released DataFrames are read
    after the release returns (written by the jobs, or by the Python API's caller).

    A suite keeps many frames that build on one another; Spark prints a kept frame's whole plan
    inside every plan that reads it, so the text (built for the UI on every adaptive step) grows
    with the product of the reuses and can exhaust the driver's memory. Only the text is cut:
    the plans and results are the same."""
    key = "spark.sql.maxPlanStringLength"
    current = _plan_length(spark.conf.get(key, None))
    if current is None or current > PLAN_STRING_LIMIT:
        spark.conf.set(key, str(PLAN_STRING_LIMIT))


def _plan_length(value: str | None) -> int | None:
    """A ``maxPlanStringLength`` setting in characters (it may carry a unit: ``64k``)."""
    if value is None:
        return None
    text = value.strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text.rstrip("b"))
    except ValueError:
        return None
