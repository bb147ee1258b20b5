"""Output checks: a broken released table aborts the release before the commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dp_ops.errors import InternalError
from jobs import runner
from jobs.config import load_spec
from pipelines.output_checks import check_released
from pipelines.spec import parse_spec
from tests.conftest import ROOT, base_spec

SCHEMA = "g string, count long, sum_v double"
GOOD = [("a", 3, 1.5), ("b", 0, 0.0), ("c", 7, 2.0)]


def check(spark: Any, rows: list[Any], schema: str = SCHEMA, public: bool = True) -> int:
    table = parse_spec(base_spec()).tables[0]
    staged = spark.createDataFrame(rows, schema)
    produced = spark.createDataFrame(GOOD, SCHEMA).schema
    keys = spark.createDataFrame([("a",), ("b",), ("c",)], "g string") if public else None
    return check_released(staged, produced, table, keys, {"g": ["a", "b", "c"]}, True)


def test_a_good_table_passes_and_reports_its_size(spark: Any) -> None:
    assert check(spark, GOOD) == 3
    assert check(spark, GOOD[:2], public=False) == 2  # private selection may drop cells


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
def test_each_broken_table_is_caught(
    spark: Any, rows: list[Any], schema: str, public: bool, problem: str
) -> None:
    with pytest.raises(InternalError, match=problem):
        check(spark, rows, schema, public)


def test_a_failed_check_publishes_nothing(
    demo_path: str, tmp_path: Path, spark: Any, monkeypatch: Any
) -> None:
    from pyspark.sql import functions as F

    spec = load_spec(ROOT / "conf" / "demo.yaml", input_path=demo_path, output_path=str(tmp_path))
    real = runner.table_frame

    def broken(*args: Any) -> Any:  # a bug that nulls one key of every table
        df = real(*args)
        first = df.columns[0]
        return df.withColumn(first, F.when(F.col(first) != F.lit("01"), F.col(first)))

    monkeypatch.setattr(runner, "table_frame", broken)
    with pytest.raises(InternalError, match=r"null key 'state'.*nothing was published"):
        runner.run_release(spark, spec, "broken")
    assert not (tmp_path / "broken").exists()
    assert not any((tmp_path / ".staging").iterdir())
