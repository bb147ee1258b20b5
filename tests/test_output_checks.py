"""Output checks: a broken released table aborts the release before the commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dp_ops.errors import InternalError
from jobs import runner
from jobs.config import load_spec
from pipelines.output_checks import check_released, check_released_arrow
from pipelines.spark_compat import to_arrow
from pipelines.spec import parse_spec
from tests.conftest import ROOT, base_spec

SCHEMA = "g string, count long, sum_v double"
GOOD = [("a", 3, 1.5), ("b", 0, 0.0), ("c", 7, 2.0)]


CHECKERS = ["spark", "arrow"]


def check(
    spark: Any, rows: list[Any], schema: str = SCHEMA, public: bool = True, checker: str = "spark"
) -> int:
    """One checker on a staged table of ``rows``: Spark's on the DataFrame, or the driver's on
    the same table as Arrow (as Parquet reads back)."""
    table = parse_spec(base_spec()).tables[0]
    staged = spark.createDataFrame(rows, schema)
    produced = spark.createDataFrame(GOOD, SCHEMA).schema
    keys = spark.createDataFrame([("a",), ("b",), ("c",)], "g string") if public else None
    domains = {"g": ["a", "b", "c"]}
    if checker == "arrow":
        rows_of_keys = to_arrow(keys) if keys is not None else None
        return check_released_arrow(to_arrow(staged), produced, table, rows_of_keys, domains, True)
    return check_released(staged, produced, table, keys, domains, True)


@pytest.mark.parametrize("checker", CHECKERS)
def test_a_good_table_passes_and_reports_its_size(spark: Any, checker: str) -> None:
    assert check(spark, GOOD, checker=checker) == 3
    # private selection may drop cells
    assert check(spark, GOOD[:2], public=False, checker=checker) == 2


@pytest.mark.parametrize(
    ("rows", "schema", "public", "problem"),
    [
        ([(None, 3, 1.5), *GOOD[1:]], SCHEMA, False, "null key 'g'"),
        ([*GOOD[:2], ("z", 7, 2.0)], SCHEMA, True, "not in the table's public key set"),
        ([*GOOD[:2], ("z", 7, 2.0)], SCHEMA, False, "key 'g' outside its declared domain"),
        ([*GOOD, ("a", 1, 1.0)], SCHEMA, False, "released more than once"),
        (GOOD[:2], SCHEMA, True, "not every public key is released"),
        ([("a", -1, 1.5), *GOOD[1:]], SCHEMA, True, "negative count 'count'"),
        ([("a", 3, float("nan")), *GOOD[1:]], SCHEMA, True, "non-finite metric 'sum_v'"),
        ([("a", 3, None), *GOOD[1:]], SCHEMA, True, "null or non-finite metric 'sum_v'"),
        ([(g, c) for g, c, _ in GOOD], "g string, count long", True, "columns"),
        ([(g, c, int(s)) for g, c, s in GOOD], "g string, count long, sum_v long", True, "type"),
    ],
)
@pytest.mark.parametrize("checker", CHECKERS)
def test_each_broken_table_is_caught(
    spark: Any, rows: list[Any], schema: str, public: bool, problem: str, checker: str
) -> None:
    with pytest.raises(InternalError, match=problem):
        check(spark, rows, schema, public, checker)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])  # checked on the driver, and by Spark
def test_a_failed_check_publishes_nothing(
    demo_path: str, tmp_path: Path, spark: Any, monkeypatch: Any, fmt: str
) -> None:
    from dataclasses import replace

    from pyspark.sql import functions as F

    spec = load_spec(ROOT / "conf" / "demo.yaml", input_path=demo_path, output_path=str(tmp_path))
    spec = replace(spec, output=replace(spec.output, format=fmt))
    arrow_checks: list[str] = []
    real_check = runner.output_checks.check_released_arrow
    monkeypatch.setattr(
        runner.output_checks,
        "check_released_arrow",
        lambda *a: arrow_checks.append(fmt) or real_check(*a),
    )
    real = runner.table_frame

    def broken(*args: Any) -> Any:  # a bug that nulls one key of every table
        df = real(*args)
        first = df.columns[0]
        return df.withColumn(first, F.when(F.col(first) != F.lit("01"), F.col(first)))

    monkeypatch.setattr(runner, "table_frame", broken)
    with pytest.raises(InternalError, match=r"null key 'state'.*nothing was published"):
        runner.run_release(spark, spec, "broken")
    assert not (tmp_path / "broken").exists()  # the attempt removed what it wrote
    assert bool(arrow_checks) == (fmt == "parquet")  # the checker each format takes
