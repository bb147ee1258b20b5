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
from dp_ops.fixed_point import grid_bounds, round_half_up
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


def _tricky_doubles(rng: random.Random) -> list[float]:
    """Halves and their neighbours (where roundings disagree), extremes and random values."""
    halves = [k + 0.5 for k in range(-6, 6)] + [0.49999999999999994, -0.49999999999999994]
    near = [math.nextafter(h, d) for h in halves for d in (-math.inf, math.inf)]
    wide = [rng.uniform(-1e6, 1e6) for _ in range(300)] + [rng.gauss(0, 3) for _ in range(300)]
    return [0.0, -0.0, 2.0**52, -(2.0**52), 1e-300, *halves, *near, *wide]


def test_round_half_up_is_the_python_rounding_on_every_double(spark: Any) -> None:
    xs = _tricky_doubles(random.Random(3))
    df = spark.createDataFrame([(i, x) for i, x in enumerate(xs)], "i long, x double")
    got = dict(df.selectExpr("i", sql.aliased(sql.round_half_up("x"), "q")).collect())
    assert [got[i] for i in range(len(xs))] == [round_half_up(x) for x in xs]
    # control: the test tells roundings apart; Python's round (halves to even) disagrees
    assert [round(x) for x in xs] != [round_half_up(x) for x in xs]


def test_grid_values_stay_within_the_grid_bounds(spark: Any) -> None:
    """The sum's sensitivity is computed from ``grid_bounds``: every row's grid value, however
    far outside the bounds its value is, lands between them, and is the value the plan expects."""
    rng = random.Random(5)
    lower, upper, g = -3.7, 1234.5, 0.3
    xs = [lower, upper, -1e300, 1e300, *[rng.uniform(-2000, 3000) for _ in range(400)]]
    xs += [k * g + g / 2 for k in range(-20, 20)]  # values half-way between grid points
    v = ValueColumn("x", lower, upper, g, center=7)
    df = spark.createDataFrame([(i, x) for i, x in enumerate(xs)], "i long, x double")
    got = dict(df.selectExpr("i", sql.aliased(v.grid_sql(), "q")).collect())
    q_lo, q_hi = grid_bounds(lower, upper, g)
    expected = [round_half_up(min(max(x, lower), upper) / g) - 7 for x in xs]
    assert [got[i] for i in range(len(xs))] == expected
    assert min(got.values()) == q_lo - 7 and max(got.values()) == q_hi - 7
