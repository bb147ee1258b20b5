"""A client process of the Spark Connect tests (run by ``tests/test_connect.py``, not by pytest).

``python -m tests.connect_client release SESSION SPEC INPUT``: the Python API's release of SPEC
over INPUT on a Spark Connect session (SESSION = sc://...) or a classic one (SESSION =
local[N]), with fixed noise keys (a test's, never a release's), printed as JSON rows per table.
With Connect, it also checks that this process never started a JVM (no py4j gateway, no
SparkContext).

``python -m tests.connect_client cli ARGS...``: the console command with ARGS in this process,
then the same check that no JVM was started.

``python -m tests.connect_client cancel sc://...``: a job alongside that would sleep a minute is
stopped by its tag; one beside it that is not cancelled returns its value.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pyspark.sql import SparkSession

from pipelines import release as release_module


def fixed_secrets() -> release_module.Secrets:
    return release_module.Secrets(key=bytes(range(32)), salt=(11, 12, 13, 14), cell_salt=(15, 16))


def session(where: str) -> Any:
    if where.startswith("sc://"):
        return SparkSession.builder.remote(where).create()
    return (
        SparkSession.builder.master(where)
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def no_jvm_here() -> None:
    from pyspark import SparkContext

    assert SparkContext._gateway is None, "a py4j gateway was started in the client"
    assert SparkContext._active_spark_context is None, "a SparkContext was started"
    assert "py4j.java_gateway" not in sys.modules or SparkContext._jvm is None


def release(where: str, spec: str, input_path: str) -> None:
    from jobs.api import release_dataframes
    from jobs.config import load_spec

    release_module.Secrets.new = classmethod(lambda cls: fixed_secrets())  # type: ignore[assignment]
    spark = session(where)
    loaded = load_spec(spec, input_path=input_path)
    result = release_dataframes(loaded, spark)
    tables = {
        name: sorted(
            (json.dumps(row.asDict(), sort_keys=True, default=str) for row in frame.collect()),
        )
        for name, frame in result.tables.items()
    }
    if where.startswith("sc://"):
        no_jvm_here()
    print(json.dumps({"tables": tables, "privacy": result.privacy}, sort_keys=True, default=str))
    spark.stop()


def cancel(where: str) -> None:
    spark = session(where)
    sleep = "reflect('java.lang.Thread', 'sleep', 60000L)"
    nap = "reflect('java.lang.Thread', 'sleep', 6000L)"
    start = time.monotonic()
    slow = release_module.Alongside(spark, lambda: spark.range(1).selectExpr(sleep).collect())
    other = release_module.Alongside(spark, lambda: len(spark.range(1).selectExpr(nap).collect()))
    time.sleep(2)  # both submitted to the server; the nap still runs at the cancel
    slow.cancel()
    try:
        slow.result()
    except Exception as e:  # the interrupted operation's error
        print(json.dumps({"cancelled": type(e).__name__}))
    else:
        raise AssertionError("the cancelled job returned a value")
    assert other.result() == 1, "the job that was not cancelled was stopped"
    assert spark.range(5).count() == 5
    assert time.monotonic() - start < 45, "the cancel did not stop the sleeping job"
    no_jvm_here()
    spark.stop()


def cli(args: list[str]) -> None:
    """The console command in this process (``SPARK_REMOTE`` or ``--remote`` in ``args``); then
    the check that it started no JVM here."""
    from jobs.cli import main

    code = main(args)
    if code != 0:
        raise SystemExit(code)
    no_jvm_here()


if __name__ == "__main__":
    if sys.argv[1] == "release":
        release(*sys.argv[2:5])
    elif sys.argv[1] == "cli":
        cli(sys.argv[2:])
    elif sys.argv[1] == "cancel":
        cancel(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")
