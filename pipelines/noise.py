"""Noise for output-sized tables, drawn on the executors from keyed streams.

Each noised value is ``true + Z`` with ``Z`` from an exact integer sampler in :mod:`dp_ops`, fed by
the AES stream of the pair (cell, measurement). The cell's identity is the SHA-256 of its key
columns (as JSON, computed by Spark), the measurement's is a label such as ``"table/count"``.
Noise is therefore a pure function of the release key and what the value *is*: a recomputed task,
a retried stage or a second action on the same DataFrame gives the same released value, never a
second independent draw. Only output-sized data (one row per partition) passes through Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dp_ops.errors import InternalError
from dp_ops.keyed_stream import KeyedStreams, ids_from_digests, label_id
from dp_ops.samplers import discrete_gaussian, discrete_laplace
from pipelines.plan import NoiseParams

CELL = "_cell"


@dataclass(frozen=True)
class NoiseJob:
    """Noise ``params`` added to ``params.column``, streams labelled ``label``."""

    params: NoiseParams
    label: str


def draw(params: NoiseParams, streams: KeyedStreams) -> np.ndarray:
    if params.mechanism == "discrete_laplace":
        return discrete_laplace(streams, params.parameter)
    return discrete_gaussian(streams, params.parameter)


def _noise_batches(
    key: bytes, jobs: Sequence[NoiseJob]
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    labels = [(job, label_id(job.label)) for job in jobs]

    def apply(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            n = batch.num_rows
            cells = batch.column(batch.schema.get_field_index(CELL)).to_pylist()
            base = ids_from_digests(b"".join(cells), n)
            columns = {
                name: batch.column(i) for i, name in enumerate(batch.schema.names) if name != CELL
            }
            for job, lid in labels:
                noise = draw(job.params, KeyedStreams(key, base ^ lid))
                true = columns[job.params.column].to_numpy(zero_copy_only=False).astype(np.int64)
                if noise.dtype == object:
                    raise InternalError(
                        "noise exceeds the 64-bit range; lower the granularity or raise epsilon"
                    )
                columns[job.params.column] = pa.array(true + noise, type=pa.int64())
            yield pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))

    return apply


def add_noise(
    df: DataFrame, key_columns: Sequence[str], jobs: Sequence[NoiseJob], key: bytes
) -> DataFrame:
    """``df`` with each job's column replaced by its noisy value (long); other columns kept."""
    identity = F.to_json(F.struct(*[F.col(c) for c in key_columns])) if key_columns else F.lit("{}")
    with_cell = df.withColumn(CELL, F.unhex(F.sha2(identity, 256)))
    out_schema = df.schema
    for job in jobs:
        if job.params.column not in df.columns:
            raise InternalError(f"noise planned for a missing column {job.params.column!r}")
    return with_cell.mapInArrow(_noise_batches(key, jobs), out_schema)
