"""Intermediate results computed once and kept, in a way that survives a lost executor.

A release keeps a few output-sized frames (the cells, the key frames, the noised table, the
levels) so that later steps read them instead of recomputing the input. ``localCheckpoint``
would cut their lineage and keep them only in the executors' block managers: an executor lost
mid-release would take blocks nothing can rebuild and fail the release. :func:`keep` persists
instead (memory, spilling to disk) with the lineage intact, so Spark recomputes lost partitions.
Recomputation is safe for privacy: the noise is keyed by the release's key and the cell's
identity (:mod:`pipelines.noise`), and bounding by a salted keyed hash, so a recomputed partition
holds the same values, never a second draw.

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
