"""Spark's log level, with the loggers that can print data held where they do not.

The operator chooses Spark's level with ``DPRELEASE_SPARK_LOG_LEVEL`` (default ``WARN``). Some of
Spark's own loggers print what was read from the input or counts taken from it, at levels an
operator may well ask for: executor and task errors quote the record that failed, Parquet's
record and footer loggers print values and row counts, adaptive execution and the block stores
log row counts and sizes, the code generator and the plan loggers print the plan's literals
(among them the release's secret salts), the CSV header check prints the first record of a file
read without a header row. Unless ``DPRELEASE_SHOW_ERRORS=1``, each of them is held at
:data:`HELD` whatever level is asked for. A release's own messages never quote data (see
:mod:`dp_ops.errors`).

This needs the classic Spark driver (py4j): log4j 2's ``Configurator`` is called in the driver's
JVM, which in local mode also runs the executors. On a cluster, executors log on their own
hosts, to the operator's cluster logs.
"""

from __future__ import annotations

import os
from typing import Any

from dp_ops.errors import SpecError, show_errors

LEVEL_VARIABLE = "DPRELEASE_SPARK_LOG_LEVEL"
LEVELS = ("ALL", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF")
"""The levels ``DPRELEASE_SPARK_LOG_LEVEL`` accepts (log4j's)."""
DEFAULT_LEVEL = "WARN"

HELD: dict[str, str] = {
    # errors of tasks: the exception text quotes the row or bytes that failed
    "org.apache.spark.executor.Executor": "OFF",
    "org.apache.spark.scheduler.TaskSetManager": "ERROR",
    "org.apache.spark.util.Utils": "OFF",
    "org.apache.spark.api.python": "OFF",
    "org.apache.spark.sql.execution.datasources.FileFormatWriter": "OFF",
    "org.apache.spark.sql.execution.datasources.FileScanRDD": "ERROR",
    # the first record of a CSV read without a header row, as column names
    "org.apache.spark.sql.catalyst.csv.CSVHeaderChecker": "OFF",
    # Parquet's record writer, reader and footer dumps: values, row and null counts
    "org.apache.parquet": "ERROR",
    "org.apache.spark.sql.execution.datasources.parquet": "WARN",
    # row counts and sizes of plans and blocks; literals of the plan (secret salts among them)
    "org.apache.spark.sql.execution": "WARN",
    "org.apache.spark.sql.catalyst": "WARN",
    "org.apache.spark.storage": "WARN",
    "org.apache.spark.shuffle": "WARN",
    "org.apache.spark.rdd": "WARN",
    "org.apache.spark.broadcast": "WARN",
}
"""Logger -> the most verbose level it may use unless the operator shows errors."""

_ORDER = {name: i for i, name in enumerate(LEVELS)}


def requested_level() -> str:
    """The level asked for in ``DPRELEASE_SPARK_LOG_LEVEL``; SpecError (exit 2) if it is not one
    of :data:`LEVELS`."""
    value = os.environ.get(LEVEL_VARIABLE, DEFAULT_LEVEL).strip().upper()
    if value not in _ORDER:
        raise SpecError(f"{LEVEL_VARIABLE}: must be one of {', '.join(LEVELS)}")
    return value


def held_levels(requested: str, show: bool) -> dict[str, str]:
    """The level each held logger gets when ``requested`` is asked for: the less verbose of the
    two, or ``requested`` for all when ``show`` (the operator shows errors)."""
    if show:
        return {}
    return {
        name: held if _ORDER[held] > _ORDER[requested] else requested for name, held in HELD.items()
    }


def apply(spark: Any) -> None:
    """Set Spark's root log level and hold the data-printing loggers (see the module
    docstring)."""
    level = requested_level()
    spark.sparkContext.setLogLevel(level)
    jvm = spark.sparkContext._jvm
    configurator = jvm.org.apache.logging.log4j.core.config.Configurator
    for name, held in held_levels(level, show_errors()).items():
        configurator.setLevel(name, jvm.org.apache.logging.log4j.Level.toLevel(held))
