"""Kept frames (pipelines.persistence): persisted with their lineage, freed by the release's
scope, and sized by adaptive execution under the sessions dprelease starts. Losing an
executor's kept blocks: tests/test_cluster.py."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from typing import Any

import pytest
from pyspark import StorageLevel
from pyspark.sql import functions as F

from jobs.session import DEFAULTS
from pipelines.persistence import keep, keep_flat, release_scope


def test_kept_frames_are_persisted_with_their_lineage_and_freed_by_the_scope(spark: Any) -> None:
    source = spark.range(1000).withColumn("g", F.col("id") % 7)
    with release_scope():
        kept = keep(source.groupBy("g").count())
        lazy = keep(source.where("id > 10"), eager=False)
        assert kept.storageLevel == lazy.storageLevel == StorageLevel.MEMORY_AND_DISK
        assert spark.sparkContext._jsc.sc().getRDDStorageInfo()  # eager: computed and cached
        # lineage intact (what lets Spark compute a lost partition again), unlike a checkpoint
        plan = kept._jdf.queryExecution().optimizedPlan().toString()
        assert "InMemoryRelation" in plan and "Range" in plan
        checkpointed = source.groupBy("g").count().localCheckpoint()
        assert "Range" not in checkpointed._jdf.queryExecution().optimizedPlan().toString()
    assert kept.storageLevel == lazy.storageLevel == StorageLevel(False, False, False, False, 1)
    assert sorted(r["count"] for r in kept.collect()) == [142] + [143] * 6  # still readable


def test_frames_kept_outside_a_scope_stay_cached(spark: Any) -> None:
    frame = spark.range(10).groupBy((F.col("id") % 2).alias("p")).count()
    with release_scope():  # a scope elsewhere (another context) does not free this frame
        kept = contextvars.Context().run(keep, frame)
    assert kept.storageLevel == StorageLevel.MEMORY_AND_DISK  # the Python API's frames
    kept.unpersist()


def _chain(spark: Any, keeper: Any, steps: int) -> Any:
    """A frame built from the kept frame before it, read twice per step (a suite's levels)."""
    frame = spark.range(100).withColumn("g", F.col("id") % 5)
    for _ in range(steps):
        totals = frame.groupBy("g").agg(F.sum("id").alias("s"))
        frame = keeper(frame.join(totals, "g").select("id", "g", (F.col("id") + 1).alias("x")))
        frame = frame.select("x", "g").withColumnRenamed("x", "id")
    return frame


def test_flat_kept_frames_keep_later_plans_small_and_their_lineage(spark: Any) -> None:
    with release_scope():
        flat = _chain(spark, keep_flat, 5)
        nested = _chain(spark, keep, 5)  # the control: each step carries every earlier plan twice
        flat_plan = flat._jdf.queryExecution().executedPlan().toString()
        nested_plan = nested._jdf.queryExecution().executedPlan().toString()
        assert len(flat_plan) < 1_000 < 100 * len(flat_plan) < len(nested_plan)
        assert sorted(flat.collect()) == sorted(nested.collect())
        # a lost partition is computed again from the lineage under each leaf, to the source
        lineage = flat.rdd.toDebugString().decode()
        assert lineage.count("at toJavaRDD") >= 5


@pytest.fixture
def spark_defaults(spark: Any) -> Iterator[Any]:
    """The session with Spark's default 200 shuffle partitions; restored afterwards."""
    keys = ["spark.sql.shuffle.partitions", *(k for k in DEFAULTS if k.startswith("spark.sql."))]
    before = {k: spark.conf.get(k, None) for k in keys}
    spark.conf.set("spark.sql.shuffle.partitions", "200")
    yield spark
    for k, v in before.items():
        if v is None:
            spark.conf.unset(k)
        else:
            spark.conf.set(k, v)


def _kept_partitions(spark: Any) -> int:
    data = spark.range(20_000).withColumn("cell", F.col("id") % 50)
    with release_scope():
        return int(keep(data.groupBy("cell").count()).rdd.getNumPartitions())


def test_kept_frames_are_coalesced_under_dprelease_defaults(spark_defaults: Any) -> None:
    spark = spark_defaults
    spark.conf.set("spark.sql.optimizer.canChangeCachedPlanOutputPartitioning", "false")
    assert _kept_partitions(spark) == 200  # control: every later step would run 200 tasks
    for key, value in DEFAULTS.items():
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)
    assert _kept_partitions(spark) <= 2
