"""Contribution bounding: the bounds hold, the choice is uniform, and it is stable."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from chispa import assert_df_equality
from pyspark.sql import functions as F
from scipy import stats

from pipelines.aggregation import aggregate_partitions
from pipelines.bounding import ValueColumn, bound_contributions
from tests.stats import ALPHA

SALT = (11, 22, 33, 44)


def pairs(kept: Any) -> Any:
    """Kept rows -> one row per (unit, partition): rows kept, sum kept, one first-row flag."""
    cols = [c for c in kept.columns if c.startswith("q_")]
    return kept.groupBy("pid", "g").agg(
        F.count("*").alias("rows"),
        F.sum("first").alias("firsts"),
        *[F.sum(c).alias("s_" + c[2:]) for c in cols],
    )


def test_bounds_hold_for_every_unit_including_a_heavy_one(spark: Any) -> None:
    heavy = spark.range(100_000).select(
        F.lit(-1).alias("pid"), (F.col("id") % 7).alias("g"), F.lit(5.0).alias("v")
    )
    light = spark.range(30_000).select(
        (F.col("id") % 3000).alias("pid"), (F.col("id") % 11).alias("g"), F.lit(1.0).alias("v")
    )
    df = heavy.unionByName(light)
    value = ValueColumn("v", 0.0, 3.0, 1.0)
    kept = bound_contributions(df, "pid", ["g"], [value], max_partitions=2, max_rows=3, salt=SALT)
    out = pairs(kept)
    per_unit = out.groupBy("pid").agg(
        F.count("*").alias("parts"), F.max("rows").alias("rows"), F.max("s_v").alias("s")
    )
    worst = per_unit.agg(F.max("parts"), F.max("rows"), F.max("s")).first()
    assert worst[0] <= 2 and worst[1] <= 3 and worst[2] <= 3 * 3  # L0, Linf, clamped values
    heavy_row = per_unit.where("pid = -1").first()
    assert heavy_row["parts"] == 2 and heavy_row["rows"] == 3 and heavy_row["s"] == 9


def test_no_noise_aggregation_is_exact(spark: Any) -> None:
    rows = [(1, "a", 1.0), (1, "a", 2.0), (1, "b", 4.0), (2, "a", 20.0), (3, "b", -1.0)]
    df = spark.createDataFrame(rows, "pid long, g string, v double")
    value = ValueColumn("v", 0.0, 10.0, 1.0)
    bounded = bound_contributions(
        df, "pid", ["g"], [value], max_partitions=5, max_rows=5, salt=SALT
    )
    got = aggregate_partitions(bounded, ["g"], [value])
    expected = spark.createDataFrame(
        [("a", 3, 2, 13), ("b", 2, 2, 4)], "g string, count long, privacy_unit_count long, s_v long"
    )
    assert_df_equality(
        got, expected, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True
    )


def test_the_choice_is_the_same_for_any_shuffle_layout(spark: Any) -> None:
    df = spark.range(20_000).select(
        (F.col("id") % 500).alias("pid"),
        (F.col("id") % 13).alias("g"),
        (F.col("id") % 9).cast("double").alias("v"),
    )
    value = ValueColumn("v", 0.0, 8.0, 1.0)
    for l0, linf in ((3, 2), (1, 1)):
        a = bound_contributions(df, "pid", ["g"], [value], l0, linf, SALT)
        b = bound_contributions(df.repartition(7), "pid", ["g"], [value], l0, linf, SALT)
        assert_df_equality(a, b, ignore_row_order=True)
        c = bound_contributions(df, "pid", ["g"], [value], l0, linf, (1, 2, 3, 4))
        assert a.exceptAll(c).count() > 0  # another salt: another sample
        assert pairs(a).where("firsts != 1").count() == 0  # one first-row flag per kept pair


def _subset_counts(kept: list[tuple[int, ...]], n: int, k: int) -> np.ndarray:
    index = {s: i for i, s in enumerate(itertools.combinations(range(n), k))}
    counts = np.zeros(len(index))
    for s in kept:
        counts[index[tuple(sorted(s))]] += 1
    return counts


def _uniform_pvalue(counts: np.ndarray) -> float:
    return float(stats.chisquare(counts).pvalue)


def test_the_single_row_plan_picks_a_uniform_partition_then_a_uniform_row(spark: Any) -> None:
    units, parts = 12_000, 4  # partition j of a unit holds j + 1 rows: uniform pairs, not rows
    rows = [(u, j, float(2**r)) for u in range(units) for j in range(parts) for r in range(j + 1)]
    df = spark.createDataFrame(rows, "pid long, g long, v double")
    value = ValueColumn("v", 0.0, 8.0, 1.0)
    kept = (
        bound_contributions(df, "pid", ["g"], [value], 1, 1, SALT).select("g", "q_v").toPandas()
    )  # safe: test
    assert len(kept) == units
    by_part = kept.groupby("g").size().reindex(range(parts), fill_value=0).to_numpy()
    assert _uniform_pvalue(by_part.astype(float)) > ALPHA
    biased = np.array([1, 2, 3, 4]) * units / 10  # a row-weighted choice would look like this
    assert _uniform_pvalue(biased) < ALPHA
    last = kept[kept["g"] == parts - 1]["q_v"].value_counts().reindex([1, 2, 4, 8], fill_value=0)
    assert _uniform_pvalue(last.to_numpy().astype(float)) > ALPHA  # uniform row inside the pair


def test_l0_keeps_a_uniformly_random_set_of_partitions(spark: Any) -> None:
    units, parts, l0 = 12_000, 6, 2  # every unit is in 6 partitions and keeps 2: 15 possible sets
    df = spark.range(units * parts).select(
        (F.col("id") / parts).cast("long").alias("pid"), (F.col("id") % parts).alias("g")
    )
    out = pairs(bound_contributions(df, "pid", ["g"], [], max_partitions=l0, max_rows=1, salt=SALT))
    kept = (
        out.groupBy("pid").agg(F.sort_array(F.collect_list("g")).alias("s")).collect()
    )  # safe: test data
    counts = _subset_counts([tuple(r["s"]) for r in kept], parts, l0)
    assert counts.sum() == units
    assert _uniform_pvalue(counts) > ALPHA
    # control: keeping the first partitions (first-N) is caught by the same test
    first_n = [tuple(range(l0))] * (units // 2) + [tuple(r["s"]) for r in kept[: units // 2]]
    assert _uniform_pvalue(_subset_counts(first_n, parts, l0)) < ALPHA


def test_linf_keeps_a_uniformly_random_set_of_rows(spark: Any) -> None:
    units, rows, linf = 12_000, 6, 2  # value 2^i identifies row i, so the kept sum names the set
    df = spark.range(units * rows).select(
        (F.col("id") / rows).cast("long").alias("pid"),
        F.lit("x").alias("g"),
        F.pow(F.lit(2.0), F.col("id") % rows).alias("v"),
    )
    value = ValueColumn("v", 0.0, 64.0, 1.0)
    out = pairs(
        bound_contributions(df, "pid", ["g"], [value], max_partitions=1, max_rows=linf, salt=SALT)
    )
    sums = [r["s_v"] for r in out.select("s_v").collect()]  # safe: test data
    kept = [tuple(i for i in range(rows) if s >> i & 1) for s in sums]
    counts = _subset_counts(kept, rows, linf)
    assert counts.sum() == units and _uniform_pvalue(counts) > ALPHA
