"""Intermediate results computed once and kept, in a way that survives a lost executor.

A release keeps a few output-sized frames (the cells, the key frames, the noised table, the
levels) so that later steps read them instead of recomputing the input. ``localCheckpoint``
would cut their lineage and keep them only in the executors' block managers: an executor lost
mid-release would take blocks nothing can rebuild and fail the release. :func:`keep` persists
instead (memory, spilling to disk) with the lineage intact, so Spark recomputes lost partitions.
Recomputation is safe for privacy: the noise is keyed by the release's key and the cell's
identity (:mod:`pipelines.noise`), and bounding by a salted keyed hash, so a recomputed partition
holds the same values, never a second draw.

A chain of kept frames, each built from the ones before, makes plans whose tree holds every
earlier frame's plan once per use: Spark walks that whole tree for each query's UI events (its
formatted explain string and plan info, whatever ``spark.sql.maxPlanStringLength`` says), and a
walk that grows with every reuse soon costs more than the query. :func:`keep_flat` keeps such a
frame with a leaf for a plan (the same rows, from its RDD), its RDD lineage still intact.

Kept frames are released by :func:`release_scope` (the jobs wrap each release in one); frames
kept outside a scope (the Python API's DataFrames) stay cached until the session ends or the
caller unpersists them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from pipelines.spark_compat import is_connect

_KEPT: ContextVar[list[DataFrame] | None] = ContextVar("dprelease_kept", default=None)


def keep(df: DataFrame, eager: bool = True) -> DataFrame:
    """``df`` persisted (memory and disk, lineage intact); ``eager``: computed now (one job).

    Costs one pass over ``df`` and its size in executor memory or local disk; no privacy cost.
    """
    kept = df.persist(StorageLevel.MEMORY_AND_DISK)
    frames = _KEPT.get()
    if frames is not None:
        frames.append(kept)
    if eager:
        kept.count()
    return kept


def keep_flat(df: DataFrame, eager: bool = True) -> DataFrame:
    """``df`` kept (:func:`keep`) as a frame whose plan is a leaf over ``df``'s RDD: later plans
    that read it do not carry ``df``'s plan. Lost partitions are still recomputed from the RDD's
    lineage. On Spark Connect (no driver JVM here) it is :func:`keep`.

    Costs one conversion of each row to an external row and back, in the JVM; no privacy cost.
    """
    spark = df.sparkSession
    if is_connect(spark):
        return keep(df, eager)
    jdf = spark._jsparkSession.createDataFrame(df._jdf.toJavaRDD(), df._jdf.schema())
    return keep(type(df)(jdf, spark), eager)


@contextmanager
def release_scope() -> Iterator[None]:
    """Unpersist every frame :func:`keep` kept inside the block when it ends."""
    frames: list[DataFrame] = []
    token = _KEPT.set(frames)
    try:
        yield
    finally:
        _KEPT.reset(token)
        for df in frames:
            with suppress(Exception):  # a stopped session has nothing left to free
                df.unpersist(blocking=False)
