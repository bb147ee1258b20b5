"""Release semantics on Spark: partitions, exactness without noise, keyed noise, accuracy."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from jobs.runner import candidate_cells, public_keys
from pipelines import noise as noise_module
from pipelines import release as release_module
from pipelines.plan import plan_release
from pipelines.release import Secrets, release_table
from pipelines.report import privacy_report
from pipelines.spec import parse_spec
from tests.conftest import base_spec
from tests.stats import variance_z, z_critical

ROWS = [(1, "a", 2.0), (1, "a", 4.0), (2, "a", 6.0), (3, "b", 100.0), (4, "z", 1.0)]


def small(spark: Any) -> Any:
    return spark.createDataFrame(ROWS, "pid long, g string, v double")


def release(
    spark: Any, doc: dict[str, Any], df: Any, noise: bool = True, secrets: Secrets | None = None
) -> Any:
    spec = parse_spec(doc)
    plan = plan_release(spec)
    t = plan.tables[0]
    keys = public_keys(spark, spec, t.table, df)
    candidates = candidate_cells(spec, t.table, df)  # as the jobs pass them
    return release_table(
        df,
        t,
        "pid",
        secrets or Secrets.new(),
        keys,
        spec.output.nonnegative_counts,
        noise,
        candidates=candidates,
    )


def test_public_keys_release_absent_cells_and_drop_unknown_ones_exactly_without_noise(
    spark: Any,
) -> None:
    doc = base_spec()
    doc["tables"][0]["metrics"] = [
        "count",
        "privacy_unit_count",
        {"sum": "v", "lower": 0, "upper": 10},
        {"mean": "v", "lower": 0, "upper": 10},
    ]
    doc["tables"][0]["bounds"] = {"max_partitions": 1, "max_rows_per_partition": 2}
    got = release(spark, doc, small(spark), noise=False)
    expected = spark.createDataFrame(
        [("a", 3, 2, 12.0, 4.0), ("b", 1, 1, 10.0, 10.0), ("c", 0, 0, 0.0, 5.0)],
        "g string, count long, privacy_unit_count long, sum_v double, mean_v double",
    )
    # 'z' is not a public key and is dropped; 'c' has no data and is released (zero sums; the
    # mean of an empty cell is the centre of the bounds)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("private", [False, True])
def test_each_cell_gets_its_own_aggregates_back_across_two_dimensions(
    spark: Any, private: bool
) -> None:
    """Cells travel through bounding and aggregation as hashed identities; the dimension values
    joined back must be each cell's own (exact, without noise, against pandas)."""
    cells = [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 3)]
    rows = [
        (1000 * i + u, g, h, float(u % 7))
        for i, (g, h) in enumerate(cells)
        for u in range(300 + 17 * i)  # a different number of units in every cell
    ]
    df = spark.createDataFrame(rows, "pid long, g string, h long, v double")
    doc = base_spec(domains={"g": ["a", "b", "c", "d"], "h": [1, 2, 3]})
    table = doc["tables"][0]
    table["dimensions"] = ["g", "h"]
    table["metrics"] = ["count", "privacy_unit_count", {"sum": "v", "lower": 0, "upper": 10}]
    if private:
        table["partitions"] = {"type": "private", "strategy": "laplace"}
    got = release(spark, doc, df, noise=False).toPandas().set_index(["g", "h"]).sort_index()
    frame = pd.DataFrame(rows, columns=["pid", "g", "h", "v"])
    want = frame.groupby(["g", "h"]).agg(count=("pid", "size"), sum_v=("v", "sum"))
    want["privacy_unit_count"] = want["count"]
    if not private:  # every public key, the empty ones with zeros
        keys = [(g, h) for g in ["a", "b", "c", "d"] for h in [1, 2, 3]]
        want = want.reindex(keys, fill_value=0)
    want = want.rename_axis(["g", "h"]).sort_index()
    assert list(got.index) == list(want.index)
    for column in ("count", "privacy_unit_count", "sum_v"):
        assert got[column].tolist() == pytest.approx(want[column].tolist()), column


@pytest.mark.parametrize("strategy", ["auto", "laplace", "gaussian", "truncated_geometric"])
def test_private_selection_releases_only_keys_that_clear_the_threshold(
    spark: Any, strategy: str
) -> None:
    big = spark.range(3000).select(
        F.col("id").alias("pid"), F.lit("big").alias("g"), F.lit(1.0).alias("v")
    )
    lonely = spark.createDataFrame(
        [(10_000 + i, f"rare{i}", 1.0) for i in range(50)], "pid long, g string, v double"
    )
    doc = base_spec()
    del doc["domains"]  # the cells are not declared: selection scans the data for them
    doc["tables"][0]["partitions"] = {"type": "private", "strategy": strategy}
    doc["tables"][0]["metrics"] = ["privacy_unit_count", "count"]
    got = release(spark, doc, big.unionByName(lonely))
    keys = {r["g"] for r in got.select("g").collect()}  # safe: released table
    assert keys == {"big"}  # single-unit partitions pass with probability <= delta_adj each
    if strategy != "truncated_geometric":  # without noise the statistic is the exact count
        exact = release(spark, doc, big.unionByName(lonely), noise=False).select("g").collect()
        assert {r["g"] for r in exact} == {"big"}


def test_pre_threshold_never_releases_small_partitions(spark: Any) -> None:
    df = spark.range(40).select(
        F.col("id").alias("pid"),
        F.when(F.col("id") < 30, "a").otherwise("b").alias("g"),
        F.lit(1.0).alias("v"),
    )
    doc = base_spec(budget={"epsilon": 1000.0, "delta": 0.5})
    doc["tables"][0]["partitions"] = {"type": "private", "pre_threshold": 15}
    got = {r["g"] for r in release(spark, doc, df).select("g").collect()}  # safe: released table
    assert got == {"a"}  # 'b' has 10 units < 15: never released, whatever the noise
    doc["tables"][0]["partitions"]["pre_threshold"] = 31
    assert release(spark, doc, df).count() == 0  # safe: released table; no cell has 31 units


@pytest.fixture(params=["driver", "executors"])
def noise_on(request: Any, monkeypatch: Any) -> str:
    """Runs a test with the noise drawn on the driver, then on the executors."""
    if request.param == "executors":
        monkeypatch.setattr(noise_module, "DRIVER_MAX_CELLS", 0)
    return str(request.param)


def test_noise_is_drawn_once_recomputation_and_repartitioning_give_the_same_values(
    spark: Any, noise_on: str
) -> None:
    df = spark.range(5000).select(
        (F.col("id") % 1700).alias("pid"),
        (F.col("id") % 3).cast("string").alias("g"),
        F.lit(3.0).alias("v"),
    )
    doc = base_spec(domains={"g": ["0", "1", "2", "3"]})
    secrets = Secrets.new()
    first = release(spark, doc, df, secrets=secrets)
    again = release(spark, doc, df.repartition(5), secrets=secrets)
    a = sorted(tuple(r) for r in first.collect())  # safe: released table
    b = sorted(tuple(r) for r in first.collect())  # a second action recomputes every task
    c = sorted(tuple(r) for r in again.collect())
    assert a == b == c
    fresh = sorted(tuple(r) for r in release(spark, doc, df).collect())
    assert fresh != a  # a new release key draws new noise


@pytest.mark.parametrize("partitions", ["public", "private"])
def test_the_driver_and_the_executors_draw_the_same_noise(
    spark: Any, monkeypatch: Any, partitions: str
) -> None:
    df = spark.range(3000).select(
        (F.col("id") % 900).alias("pid"),
        (F.col("id") % 7).cast("string").alias("g"),
        (F.col("id") % 50).cast("double").alias("v"),
    )
    budget = {"epsilon": 4.0, "delta": 1e-6}
    doc = base_spec(domains={"g": [str(i) for i in range(8)]}, budget=budget)
    table = doc["tables"][0]
    table["metrics"] = ["count", "privacy_unit_count", {"mean": "v", "lower": 0, "upper": 50}]
    if partitions == "private":
        table["partitions"] = {"type": "private", "strategy": "laplace"}
    secrets = Secrets.new()
    on_driver = release(spark, doc, df, secrets=secrets)
    monkeypatch.setattr(noise_module, "DRIVER_MAX_CELLS", 0)
    on_executors = release(spark, doc, df, secrets=secrets)
    assert on_driver.count() > 0  # safe: released table
    assert_df_equality(on_driver, on_executors, ignore_row_order=True, ignore_nullable=True)
    other = release(spark, doc, df)  # control: another release key gives other values
    assert sorted(map(tuple, other.collect())) != sorted(map(tuple, on_driver.collect()))


def test_the_driver_returns_one_partition_with_every_dimension_type_unchanged(
    spark: Any, monkeypatch: Any
) -> None:
    df = spark.sql(
        "select cast(id as int) as i, id % 2 = 0 as b, date_add(date'2020-01-01', cast(id as int))"
        " as d, timestamp'2021-03-14 01:30:00' + make_interval(0, 0, 0, 0, cast(id as int), 0, 0)"
        " as ts, cast(id / 3 as decimal(10, 2)) as dec, cast(id as string) as s,"
        " cast(0 as long) as count from range(6)"
    )
    dims = ["i", "b", "d", "ts", "dec", "s"]
    params = plan_release(parse_spec(base_spec())).tables[0].measurements[0]
    job = noise_module.NoiseJob(params, "t/count", target="count")
    key = Secrets.new().key
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")  # DST starts in the range
    try:
        on_driver = noise_module.add_noise(df, dims, [job], key)
        monkeypatch.setattr(noise_module, "DRIVER_MAX_CELLS", 0)
        on_executors = noise_module.add_noise(df, dims, [job], key)
        assert on_driver.schema == df.schema
        assert on_driver.rdd.getNumPartitions() == 1  # written as one file
        assert_df_equality(on_driver, on_executors, ignore_row_order=True)
        assert_df_equality(on_driver.drop("count"), df.drop("count"), ignore_row_order=True)
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)


def test_released_noise_matches_the_manifest_standard_deviation(spark: Any) -> None:
    cells = 6000  # one unit per public cell: released - 1 is one noise draw per cell
    df = spark.range(cells).select(
        F.col("id").alias("pid"), F.col("id").cast("string").alias("g"), F.lit(1.0).alias("v")
    )
    for noise, kurtosis in (("laplace", 6.0), ("gaussian", 3.0)):
        doc = base_spec(
            noise=noise,
            domains={"g": [str(i) for i in range(cells)]},
            output={"path": "unused", "nonnegative_counts": False},
            budget={"epsilon": 0.5, "delta": 1e-6},
        )
        doc["tables"][0]["metrics"] = ["count"]
        released = (
            release(spark, doc, df).select("count").toPandas()["count"].to_numpy()
        )  # safe: test
        claimed = privacy_report(plan_release(parse_spec(doc)))["tables"][0]["metrics"][0][
            "standard_deviation"
        ]
        errors = released - 1
        z = z_critical()
        assert abs(variance_z(errors, claimed**2, kurtosis)) < z, noise
        for wrong in (0.7 * claimed, 1.3 * claimed):  # controls: a 30% scale error is rejected
            assert abs(variance_z(errors, wrong**2, kurtosis)) > z, (noise, wrong)
        assert np.issubdtype(released.dtype, np.integer)


def test_a_table_without_dimensions_is_one_total_cell_even_on_no_matching_data(spark: Any) -> None:
    doc = base_spec()
    doc["tables"][0]["dimensions"] = []
    got = release(spark, doc, small(spark), noise=False).collect()  # safe: test data
    assert len(got) == 1 and got[0]["count"] == 4  # Linf = 1: one row per unit
    empty = small(spark).where("pid < 0")
    zero = release(spark, doc, empty, noise=False).collect()
    assert len(zero) == 1 and zero[0]["count"] == 0
    noisy = release(spark, doc, empty).collect()
    assert len(noisy) == 1 and isinstance(noisy[0]["count"], int)


def test_a_job_alongside_returns_its_value_or_raises_and_keeps_the_callers_job_group(
    spark: Any,
) -> None:
    sc = spark.sparkContext
    group = "alongside-test"
    sc.setJobGroup(group, "a job started on another thread")
    try:
        assert sc.statusTracker().getJobIdsForGroup(group) == []  # control: nothing ran yet
        assert release_module.Alongside(spark, lambda: spark.range(10).count()).result() == 10
        assert sc.statusTracker().getJobIdsForGroup(group)  # the thread's job, in the group
        failing = release_module.Alongside(spark, lambda: spark.range(1).count() // 0)
        with pytest.raises(ZeroDivisionError):
            failing.result()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)


def test_cancelling_a_job_alongside_stops_its_spark_job_and_no_other(spark: Any) -> None:
    """A release whose cells cannot be collected cancels the key scan instead of waiting for it.
    A job that would sleep a minute is stopped; the caller's own job with the same group runs
    on; a job alongside that is not cancelled returns its value (control)."""
    sc = spark.sparkContext
    sc.setJobGroup("alongside-cancel", "jobs that must survive the cancel")
    sleep = "reflect('java.lang.Thread', 'sleep', 60000L)"
    try:
        slow = release_module.Alongside(spark, lambda: spark.range(1).selectExpr(sleep).collect())
        nap = "reflect('java.lang.Thread', 'sleep', 2000L)"
        other = release_module.Alongside(
            spark, lambda: len(spark.range(1).selectExpr(nap).collect())
        )
        deadline = time.monotonic() + 30
        while not sc.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
            time.sleep(0.05)
        slow.cancel()
        with pytest.raises(Exception, match="cancel"):
            slow.result()  # cancelled, not a minute of sleep
        assert other.result() == 1  # still running when the first was cancelled
        assert spark.range(5).count() == 5  # the caller's thread and group still run jobs
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)


def spy_on_driver(monkeypatch: Any) -> list[bool]:
    """For each release, whether it took the driver's way (True) or fell back to Spark's."""
    ways: list[bool] = []
    on_driver = release_module._driver_way

    def spy(*args: Any, **kwargs: Any) -> Any:
        noisy, cells = on_driver(*args, **kwargs)
        ways.append(noisy is not None)
        return noisy, cells

    monkeypatch.setattr(release_module, "_driver_way", spy)
    return ways


@pytest.mark.parametrize(
    "strategy", [None, "post_aggregation", "laplace", "gaussian", "truncated_geometric"]
)
def test_declared_keys_on_the_driver_release_what_the_spark_join_releases(
    spark: Any, monkeypatch: Any, strategy: str | None
) -> None:
    """Keys declared in the spec (public keys, or the declared cells private selection chooses
    from) go to the driver with the data's cells and are noised and selected there; the same
    release through the Spark join (forced by a zero driver limit) gives the same table, with
    bounding that binds (units in several cells), keys without data, data outside the public keys
    and, for selection, cells on both sides of the threshold."""
    df = spark.range(4000).select(
        (F.col("id") % 700).alias("pid"),
        (F.col("id") % 9).cast("string").alias("g"),  # '8' is not a key
        (F.col("id") % 3).alias("h"),
        (F.col("id") % 40).cast("double").alias("v"),
    )
    doc = base_spec(domains={"g": [str(i) for i in range(8)] + ["x"], "h": [0, 1, 2, 5]})
    table = doc["tables"][0]
    table["dimensions"] = ["g", "h"]
    table["bounds"] = {"max_partitions": 2, "max_rows_per_partition": 2}
    table["metrics"] = ["count", "privacy_unit_count", {"mean": "v", "lower": 0, "upper": 40}]
    if strategy is not None:  # validated input: every cell inside the declared domains
        df = df.where(F.col("g") != "8").union(  # and a cell below any threshold
            spark.createDataFrame([(5000, "x", 5, 1.0)], df.schema)
        )
        table["partitions"] = {"type": "private", "strategy": strategy, "pre_threshold": 2}
        doc["budget"] = {"epsilon": 4.0, "delta": 1e-6}
    ways = spy_on_driver(monkeypatch)
    secrets = Secrets.new()
    for noise in (False, True):
        on_driver = release(spark, doc, df, noise=noise, secrets=secrets)
        assert ways == [True], "declared keys should take the driver's way"
        ways.clear()
        with monkeypatch.context() as m:
            m.setattr(noise_module, "DRIVER_MAX_CELLS", 0)
            through_spark = release(spark, doc, df, noise=noise, secrets=secrets)
        assert ways in ([], [False])  # control: the Spark join ran
        ways.clear()
        released = on_driver.count()  # safe: a released table
        if strategy is None:
            assert released == 9 * 4  # every public key, once
        else:
            assert 0 < released < 8 * 3 + 1  # at most the cells of the data; some kept
        assert on_driver.rdd.getNumPartitions() == 1
        assert_df_equality(on_driver, through_spark, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    "strategy", ["post_aggregation", "laplace", "gaussian", "truncated_geometric"]
)
def test_the_data_cells_on_the_driver_release_what_the_spark_join_releases(
    spark: Any, monkeypatch: Any, strategy: str
) -> None:
    """Private selection without declared domains collects the exact cells and, in a second job
    alongside, the data's dimension values; the driver joins, noises and selects. The same
    release through the Spark join (forced by a zero driver limit) gives the same table, with
    bounding that binds, string, integer, boolean and date dimensions, and cells on both sides
    of the threshold."""
    df = spark.range(4000).select(
        (F.col("id") % 700).alias("pid"),
        (F.col("id") % 9).cast("string").alias("g"),
        (F.col("id") % 3).alias("h"),
        (F.col("id") % 2 == 0).alias("b"),
        F.date_add(F.lit("2020-01-01").cast("date"), (F.col("id") % 2).cast("int")).alias("d"),
        (F.col("id") % 40).cast("double").alias("v"),
    )
    df = df.union(
        spark.createDataFrame([(5000, "x", 5, True, None, 1.0)], df.schema).fillna(
            {"d": "2020-01-01"}
        )
    )  # a cell below any threshold
    doc = base_spec(budget={"epsilon": 4.0, "delta": 1e-6}, domains={})
    table = doc["tables"][0]
    table["dimensions"] = ["g", "h", "b", "d"]
    table["bounds"] = {"max_partitions": 2, "max_rows_per_partition": 2}
    table["metrics"] = ["count", "privacy_unit_count", {"mean": "v", "lower": 0, "upper": 40}]
    table["partitions"] = {"type": "private", "strategy": strategy, "pre_threshold": 2}
    ways = spy_on_driver(monkeypatch)
    secrets = Secrets.new()
    for noise in (False, True):
        on_driver = release(spark, doc, df, noise=noise, secrets=secrets)
        with monkeypatch.context() as m:
            m.setattr(noise_module, "DRIVER_MAX_CELLS", 0)
            through_spark = release(spark, doc, df, noise=noise, secrets=secrets)
        assert ways == [True, False]  # control: the second release took the Spark join
        ways.clear()
        released = on_driver.count()  # safe: a released table
        assert 0 < released <= 9 * 3 * 2 * 2  # some cells kept, none outside the data's
        assert on_driver.rdd.getNumPartitions() == 1
        assert_df_equality(on_driver, through_spark, ignore_row_order=True, ignore_nullable=True)


def test_dimensions_the_driver_cannot_identify_take_the_spark_join(spark: Any) -> None:
    df = spark.range(600).select(
        (F.col("id") % 300).alias("pid"),
        (F.col("id") % 2).cast("double").alias("g"),
        F.lit(1.0).alias("v"),
    )
    doc = base_spec(budget={"epsilon": 4.0, "delta": 1e-6}, domains={})
    doc["tables"][0]["partitions"] = {"type": "private", "strategy": "laplace"}
    assert not release_module.driver_key_types(df.schema, ["g"])
    assert release_module.driver_key_types(df.withColumn("g", F.col("g").cast("int")).schema, ["g"])
    released = release(spark, doc, df)
    assert sorted(r["g"] for r in released.collect()) == [0.0, 1.0]  # safe: released table


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (
            "string",
            ["", "a", 'q"uote', "back\\slash", "tab\tnl\ncr\r", "\x01\x1f\x7f", "é€😀\u2028"],
        ),
        ("string", ["", "a", "01001", "\x7f", "é€😀\u2028"]),  # nothing to escape: Arrow's way
        ("bigint", [0, -1, 2**63 - 1, -(2**63)]),
        ("int", [7, -(2**31)]),
        ("boolean", [True, False]),
        ("date", ["0001-01-01", "2020-02-29", "9999-12-31"]),
    ],
)
def test_cell_identities_on_the_driver_are_the_ones_spark_computes(
    spark: Any, dtype: str, values: list[Any]
) -> None:
    import datetime as dt

    import pyarrow as pa

    if dtype == "date":
        values = [dt.date.fromisoformat(v) for v in values]
    df = spark.createDataFrame([(v, i) for i, v in enumerate(values)], f'`k"1` {dtype}, n int')
    want = df.select(
        F.unhex(F.sha2(F.to_json(F.struct(F.col('`k"1`'), F.col("n"))), 256)).alias("d")
    ).collect()
    table = pa.table({'k"1': [r[0] for r in df.collect()], "n": [r[1] for r in df.collect()]})
    got = noise_module.cell_digests(table, ['k"1', "n"]).to_pylist()
    assert got == [bytes(r["d"]) for r in want]
    assert len(set(got)) == len(values)  # control: distinct keys, distinct identities


def test_declared_keys_stay_on_the_driver_only_while_few(spark: Any, monkeypatch: Any) -> None:
    from pyspark.sql import types as T

    from pipelines import partitions

    schema = T.StructType([T.StructField("g", T.StringType()), T.StructField("h", T.LongType())])
    listed = partitions.inline_keys(spark, ["g", "h"], [["a", 1], ["b", "2"], ["a", 1]], schema)
    assert listed.rows is not None
    assert listed.rows.to_pylist() == [{"g": "a", "h": 1}, {"g": "b", "h": 2}]  # once each
    assert sorted(map(tuple, listed.frame.collect())) == [("a", 1), ("b", 2)]
    crossed = partitions.cross_product_keys(spark, [("g", ["a", "b"]), ("h", [1, 2, 3])], schema)
    assert crossed.rows is not None and crossed.rows.num_rows == 6
    monkeypatch.setattr(partitions, "LOCAL_MAX_KEYS", 5)
    crossed = partitions.cross_product_keys(spark, [("g", ["a", "b"]), ("h", [1, 2, 3])], schema)
    assert crossed.rows is None and crossed.frame.count() == 6  # Spark keeps them
    listed = partitions.inline_keys(spark, ["g"], [[str(i)] for i in range(6)], schema)
    assert listed.rows is None and listed.frame.count() == 6


def test_cells_beyond_the_driver_fall_back_to_spark_even_among_few_declared_cells(
    spark: Any, monkeypatch: Any
) -> None:
    """The cells of validated input lie among the declared cells, so with few declared cells the
    driver's way keeps no copy of the cells for Spark's way. Called on input outside the domains
    with more cells than the driver takes, the release still falls back and computes Spark's
    table (the cells are computed again)."""
    df = spark.range(600).select(
        F.col("id").alias("pid"),
        (F.col("id") % 6).cast("string").alias("g"),  # six cells; two declared
        F.lit(1.0).alias("v"),
    )
    doc = base_spec(domains={"g": ["0", "1"]})
    doc["tables"][0]["partitions"] = {"type": "private", "strategy": "laplace"}
    spec = parse_spec(doc)
    candidates = candidate_cells(spec, spec.tables[0], df)
    assert candidates is not None and candidates.num_rows == 2
    plan = plan_release(spec).tables[0]
    secrets = Secrets.new()
    ways = spy_on_driver(monkeypatch)
    monkeypatch.setattr(noise_module, "DRIVER_MAX_CELLS", 3)
    fell_back = release_table(df, plan, "pid", secrets, None, True, False, candidates)
    monkeypatch.setattr(noise_module, "DRIVER_MAX_CELLS", 0)
    through_spark = release_table(df, plan, "pid", secrets, None, True, False, candidates)
    assert ways == [False]  # the first collected more cells than the driver takes
    assert fell_back.count() == 6  # safe: the test mode without noise, on made-up data
    assert_df_equality(fell_back, through_spark, ignore_row_order=True, ignore_nullable=True)


def test_private_selection_chooses_among_declared_cells_only_when_every_domain_is_declared(
    spark: Any,
) -> None:
    df = spark.createDataFrame([(1, "a", 2, 1.0)], "pid long, g string, h long, v double")
    doc = base_spec(domains={"g": ["a", "b"], "h": [1, 2, 3]})
    table = doc["tables"][0]
    table["dimensions"] = ["g", "h"]
    table["partitions"] = {"type": "private", "strategy": "laplace"}
    spec = parse_spec(doc)
    cells = candidate_cells(spec, spec.tables[0], df)
    assert cells is not None and cells.num_rows == 6
    assert {"g": "b", "h": 3} in cells.to_pylist()
    del doc["domains"]["h"]  # one dimension undeclared: the data's cells must be scanned
    assert candidate_cells(parse_spec(doc), parse_spec(doc).tables[0], df) is None
    doc["domains"]["h"] = [1, 2, 3]
    table["partitions"] = {"type": "public", "keys": "cross_product"}
    assert candidate_cells(parse_spec(doc), parse_spec(doc).tables[0], df) is None  # not private


@pytest.mark.parametrize("strategy", ["auto", "laplace"])
def test_a_count_only_table_with_one_row_per_unit_selects_by_its_released_count(
    spark: Any, monkeypatch: Any, strategy: str
) -> None:
    """With max_rows_per_partition 1 the bounded row count of a cell is its unit count, so auto
    selection thresholds the released noisy count itself (post-aggregation): no budget goes to a
    separate statistic, and no released count is below the threshold, on the driver's way and
    Spark's. Control: a separate Laplace statistic releases counts below it."""
    doc = base_spec(budget={"epsilon": 1.0, "delta": 1e-6}, noise="laplace", domains={})
    table = doc["tables"][0]
    table.update(metrics=["count"], bounds={"max_partitions": 1, "max_rows_per_partition": 1})
    table["partitions"] = {"type": "private", "strategy": strategy, "pre_threshold": 2}
    (t,) = plan_release(parse_spec(doc)).tables
    assert t.selection is not None
    if strategy == "auto":
        assert (t.selection.strategy, t.selection.carrier, t.selection.epsilon) == (
            "post_aggregation",
            "count",
            0,
        )
        separate = plan_release(
            parse_spec(
                {
                    **doc,
                    "tables": [
                        {
                            **table,
                            "partitions": {
                                "type": "private",
                                "strategy": "laplace",
                                "pre_threshold": 2,
                            },
                        }
                    ],
                }
            )
        ).tables[0]
        assert t.noise_for("count").sd()[0] < separate.noise_for("count").sd()[0]
    kept_from = t.selection.threshold + t.selection.pre_threshold - 1  # exact units per cell
    cells = 150
    df = spark.range(cells * kept_from).select(
        F.col("id").alias("pid"),
        (F.col("id") % cells).cast("string").alias("g"),
        F.lit(1.0).alias("v"),
    )
    secrets = Secrets.new()
    below = []
    for driver_cells in (noise_module.DRIVER_MAX_CELLS, 0):
        with monkeypatch.context() as m:
            m.setattr(noise_module, "DRIVER_MAX_CELLS", driver_cells)
            counts = [r["count"] for r in release(spark, doc, df, secrets=secrets).collect()]
        assert 0 < len(counts) < cells  # about half the cells kept
        below.append(sum(c < kept_from for c in counts))
    if strategy == "auto":
        assert below == [0, 0]
    else:  # control: the released count is not what selection thresholded
        assert min(below) > 0


def test_the_manifest_states_how_far_clamping_moves_the_expected_total(spark: Any) -> None:
    """Public keys without levels: clamping counts at zero raises the released total, by the
    expected shifts the manifest states from the noise alone. 3,000 public cells, 10 persons in
    one: the released total sits within sampling error of 10 plus the stated shifts. Control:
    without clamping the total is unbiased, far below."""
    keys = [str(i) for i in range(3000)]
    doc = base_spec(budget={"epsilon": 1.0}, noise="laplace", domains={"g": keys})
    doc["tables"][0].update(metrics=["count"])
    plan = plan_release(parse_spec(doc))
    (entry,) = privacy_report(plan)["tables"][0]["metrics"]
    clamping = entry["clamping"]
    assert clamping["cells"] == 3000 and clamping["exact"]
    shift = clamping["expected_shift_by_true_count"]
    assert clamping["expected_total_shift_at_most"] == pytest.approx(3000 * shift["0"])
    df = spark.range(10).select(
        F.col("id").alias("pid"), F.lit("0").alias("g"), F.lit(1.0).alias("v")
    )
    sd = plan.tables[0].noise_for("count").sd()[0]
    spread = 5 * math.sqrt(3000 * sd * sd)  # clamped cells vary less than this
    expected = 10 + shift["10"] + 2999 * shift["0"]
    total = sum(r["count"] for r in release(spark, doc, df).collect())
    assert abs(total - expected) <= spread
    assert total <= 10 + clamping["expected_total_shift_at_most"] + spread
    doc["output"]["nonnegative_counts"] = False  # control
    unclamped = sum(r["count"] for r in release(spark, doc, df).collect())
    assert abs(unclamped - 10) <= spread < abs(unclamped - expected)
    assert (
        "clamping" not in privacy_report(plan_release(parse_spec(doc)))["tables"][0]["metrics"][0]
    )
