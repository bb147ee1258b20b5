"""Expressions as SQL text: names are never read as SQL, numbers read back exactly."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest
from pyspark.errors import AnalysisException
from pyspark.sql import types as T

from dp_ops.errors import InternalError
from pipelines import sql_text as sql
from pipelines.bounding import ValueColumn, bound_contributions

AWKWARD = ["a.b", "c`d", "e f", "select", "x-y", "ünï"]


def test_any_column_name_is_one_column(spark: Any) -> None:
    df = spark.createDataFrame([(1, 2, 3, 4, 5, 6)], AWKWARD)
    out = df.selectExpr(*[sql.aliased(f"{sql.name(c)} + 1", c) for c in AWKWARD])
    assert out.columns == AWKWARD
    assert list(out.first()) == [2, 3, 4, 5, 6, 7]
    # control: unquoted, a dotted name is read as a field of a struct that does not exist
    with pytest.raises(AnalysisException):
        df.selectExpr("a.b + 1").collect()


def test_numbers_read_back_exactly(spark: Any) -> None:
    rng = random.Random(7)
    doubles = [0.0, -0.0, 0.1, 1 / 3, 1e-5, 2.5e-300, 5e-324, 1.7976931348623157e308, 250_000.0]
    doubles += [struct.unpack("<d", struct.pack("<q", rng.getrandbits(62)))[0] for _ in range(40)]
    doubles += [-d for d in doubles[-20:]]
    longs = [0, 1, -1, 2**63 - 1, -(2**63), rng.getrandbits(63), -rng.getrandbits(63)]
    row = (
        spark.range(1)
        .selectExpr(
            *[sql.aliased(sql.double(v), f"d{i}") for i, v in enumerate(doubles)],
            *[sql.aliased(sql.long(v), f"l{i}") for i, v in enumerate(longs)],
        )
        .first()
    )
    for i, v in enumerate(doubles):
        got = row[f"d{i}"]
        assert got == v and math.copysign(1.0, got) == math.copysign(1.0, v), (v, got)
    assert [row[f"l{i}"] for i in range(len(longs))] == longs
    types = spark.range(1).selectExpr(f"typeof({sql.double(1e20)})", f"typeof({sql.long(3)})")
    assert list(types.first()) == ["double", "bigint"]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_doubles_are_refused(bad: float) -> None:
    with pytest.raises(InternalError):
        sql.double(bad)


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, True])
def test_longs_out_of_range_are_refused(bad: int) -> None:
    with pytest.raises(InternalError):
        sql.long(bad)


def test_bounding_works_with_awkward_names(spark: Any) -> None:
    schema = T.StructType(
        [
            T.StructField("unit.id", T.LongType()),
            T.StructField("cell`x", T.StringType()),
            T.StructField("value y", T.DoubleType()),
        ]
    )
    rows = [(u, f"g{(u + r) % 3}", float(r)) for u in range(50) for r in range(4)]
    df = spark.createDataFrame(rows, schema)
    value = ValueColumn("value y", 0.0, 2.0, 1.0)
    for l0, linf in [(1, 1), (2, 3)]:
        kept = bound_contributions(df, "unit.id", ["cell`x"], [value], l0, linf, (1, 2, 3, 4))
        per_unit = kept.groupBy("`unit.id`").count().collect()
        assert len(per_unit) == 50
        assert max(r["count"] for r in per_unit) <= l0 * linf
        assert {r[0] for r in kept.select("`q_value y`").collect()} <= {0, 1, 2}
