"""Noise for output-sized tables, drawn from keyed streams on the driver or the executors.

Each noised value is ``true + Z`` with ``Z`` from an exact integer sampler in :mod:`dp_ops`, fed by
the AES stream of the pair (cell, measurement). The cell's identity is the SHA-256 of its key
columns as JSON (computed by Spark's ``to_json``, or for keys already on the driver by
:func:`cell_digests`, which writes the same text), the measurement's is a label such as
``"table/count"``.
Noise is therefore a pure function of the release key and what the value *is*: a recomputed task,
a retried stage or a second action on the same DataFrame gives the same released value, never a
second independent draw. Only output-sized data (one row per partition) passes through Python.

Where it is drawn changes no value, only the cost. :func:`add_noise` first computes the exact
table once (kept: :func:`~pipelines.persistence.keep`). Up to ``DRIVER_MAX_CELLS`` rows, it is
collected and noised on the driver, which already runs Python: starting Python workers for one
small stage costs more than the noise. Larger tables are noised on the executors
(``mapInArrow``), in parallel, so the driver's memory stays small. The choice depends on the
table's size, so it is never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.errors import InternalError
from dp_ops.keyed_stream import KeyedStreams, ids_from_digests, label_id
from dp_ops.samplers import bernoulli_table, discrete_gaussian, discrete_laplace
from dp_ops.top_k import top_k
from pipelines.persistence import keep
from pipelines.plan import NoiseParams, TruncatedGeometric
from pipelines.spark_compat import arrow_frame, to_arrow

CELL = "_cell"
DRIVER_MAX_CELLS = 250_000
"""Tables of up to this many rows are noised on the driver (see the module docstring). Above it
the driver's attempt is a wasted pass (the cells are counted by collecting one more than this),
so it sits above the cell counts of common tables: the counties x 18 age groups x 2 sexes of a
national table are about 10^5 cells. A quarter million cells of a few measures stay within tens
of megabytes on the driver, and their noise takes 0.1 to 0.3 s per measure (``bench_samplers.py``
printed 0.5 to 1.24 s per 10^6 draws)."""


@dataclass(frozen=True)
class NoiseJob:
    """Noise ``params`` added to ``target`` (default ``params.column``), streams labelled
    ``label``. A histogram is one measurement noised in each of its bin columns."""

    params: NoiseParams
    label: str
    target: str | None = None

    @property
    def column(self) -> str:
        return self.target or self.params.column


@dataclass(frozen=True)
class KeepJob:
    """Turn ``column`` (distinct units) into 1 if the truncated geometric keeps it, else 0."""

    column: str
    table: TruncatedGeometric
    label: str


@dataclass(frozen=True)
class ChoiceJob:
    """A mode or top-k: per cell, the exact counts in ``columns`` (one per category) turned into
    the indices of ``k`` categories by the exponential mechanism (:func:`dp_ops.top_k.top_k`),
    written into the first ``k`` of those columns; streams labelled ``label``."""

    columns: tuple[str, ...]
    k: int
    epsilon: Fraction
    """Per cell."""
    sensitivity: int
    label: str

    @property
    def column(self) -> str:
        return self.columns[0]


Job = NoiseJob | KeepJob | ChoiceJob


def draw(params: NoiseParams, streams: KeyedStreams) -> np.ndarray:
    if params.mechanism == "discrete_laplace":
        return discrete_laplace(streams, params.parameter)
    return discrete_gaussian(streams, params.parameter)


def _apply_job(job: NoiseJob | KeepJob, streams: KeyedStreams, true: np.ndarray) -> np.ndarray:
    if isinstance(job, KeepJob):
        hi = np.array(job.table.hi, dtype=np.uint64)
        lo = np.array(job.table.lo, dtype=np.uint64)
        kept: np.ndarray = bernoulli_table(streams, true, hi, lo).astype(np.int64)
        return kept
    noise = draw(job.params, streams)
    if noise.dtype == object:
        raise InternalError(
            "noise exceeds the 64-bit range; lower the granularity or raise epsilon"
        )
    noisy: np.ndarray = true + noise
    return noisy


def _longs(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False)).astype(np.int64)


def _noise_batches(
    key: bytes, jobs: Sequence[Job]
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
                streams = KeyedStreams(key, base ^ lid)
                if isinstance(job, ChoiceJob):
                    counts = np.stack([_longs(columns[c]) for c in job.columns], axis=1)
                    picks = top_k(streams, counts, job.k, job.epsilon, job.sensitivity)
                    for r in range(job.k):
                        columns[job.columns[r]] = pa.array(picks[:, r], type=pa.int64())
                    continue
                out = _apply_job(job, streams, _longs(columns[job.column]))
                columns[job.column] = pa.array(out, type=pa.int64())
            yield pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))

    return apply


def add_noise(
    df: DataFrame, key_columns: Sequence[str], jobs: Sequence[Job], key: bytes
) -> DataFrame:
    """``df`` with each job's column replaced by its noisy value (long); other columns kept.

    Runs Spark now: ``df`` (output-sized) is computed once, then noised on the driver if it has
    at most ``DRIVER_MAX_CELLS`` rows, else on the executors. Both give the same values, and both
    return a computed table (local data, or a kept frame, :func:`~pipelines.persistence.keep`).
    A kept frame's partitions lost with an executor are computed again with the same values: the
    noise is keyed by ``key`` and each cell's identity, so no second draw exists.
    """
    exact = keep(_with_cell(df, key_columns, jobs), eager=False)
    apply = _noise_batches(key, jobs)
    # at most one row more than the driver takes: one small job that both sizes and collects
    table = to_arrow(exact.limit(DRIVER_MAX_CELLS + 1))
    if table.num_rows > DRIVER_MAX_CELLS:
        return keep(exact.mapInArrow(apply, df.schema))
    return driver_frame(df.sparkSession, noise_on_driver(table, jobs, key), df.schema)


def noise_in_plan(
    df: DataFrame, key_columns: Sequence[str], jobs: Sequence[Job], key: bytes
) -> DataFrame:
    """``df`` noised as :func:`add_noise` noises it (the same values), on the executors, as a
    step of the plan that reads it: nothing runs now and nothing is kept. For callers that keep
    what they build on it: a recomputed partition gets the same noise (keyed by ``key`` and each
    cell's identity), so reading it twice never draws twice."""
    return _with_cell(df, key_columns, jobs).mapInArrow(_noise_batches(key, jobs), df.schema)


def _with_cell(df: DataFrame, key_columns: Sequence[str], jobs: Sequence[Job]) -> DataFrame:
    """``df`` with each cell's identity (a digest of its key values) in ``CELL``."""
    for job in jobs:
        for column in job.columns if isinstance(job, ChoiceJob) else (job.column,):
            if column not in df.columns:
                raise InternalError(f"noise planned for a missing column {column!r}")
    identity = F.to_json(F.struct(*[F.col(c) for c in key_columns])) if key_columns else F.lit("{}")
    return df.withColumn(CELL, F.unhex(F.sha2(identity, 256)))


def driver_frame(spark: SparkSession, table: pa.Table, schema: T.StructType) -> DataFrame:
    """A table noised on the driver, handed back to Spark in one partition, not one per core:
    written, it is one file rather than a file per core."""
    return arrow_frame(spark, table, schema).coalesce(1)


def noise_on_driver(table: pa.Table, jobs: Sequence[Job], key: bytes) -> pa.Table:
    """``table`` (with the cells' identities in ``_cell``) noised, without ``_cell``."""
    batches = list(_noise_batches(key, jobs)(table.to_batches()))
    if batches:
        return pa.Table.from_batches(batches)
    return table.select([name for name in table.column_names if name != CELL])


_ESCAPED = re.compile(r'["\\\x00-\x1f]')
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _SHORT_ESCAPES.get(ch) or f"\\u{ord(ch):04X}"


def _json_string(text: str) -> str:
    """``text`` as a JSON string, escaped as Spark's ``to_json`` (Jackson) escapes it: quote,
    backslash and control characters; everything else as it is."""
    return '"' + _ESCAPED.sub(_escape, text) + '"'


def _json_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return _json_string(value.isoformat())
    raise InternalError(f"no JSON identity for a key of type {type(value).__name__}")


def cell_digests(table: pa.Table, key_columns: Sequence[str]) -> pa.Array:
    """The identity of each row's cell, as ``add_noise`` computes it in Spark:
    ``unhex(sha2(to_json(struct(key_columns...)), 256))``, for keys that are strings, integers,
    booleans or dates (the types of declared keys) and never null.

    The JSON text is built column by column with Arrow's kernels (Python only for dates and for
    strings that need escaping); only the SHA-256 of each row runs in Python."""
    if not key_columns:  # one total cell: add_noise's identity is the empty object
        return pa.array([hashlib.sha256(b"{}").digest()] * table.num_rows, type=pa.binary())
    parts: list[Any] = []
    for i, c in enumerate(key_columns):
        parts.append(("{" if i == 0 else ",") + _json_string(c) + ":")
        parts.append(_json_texts(table.column(c)))
    parts.append("}")
    text = pc.binary_join_element_wise(*parts, "")
    digests = [hashlib.sha256(t).digest() for t in text.cast(pa.binary()).to_pylist()]
    return pa.array(digests, type=pa.binary())


def _json_texts(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each value of ``column`` as the JSON text ``to_json`` writes for it (see
    :func:`_json_value`), as strings."""
    if pa.types.is_dictionary(column.type):
        column = pa.chunked_array(
            [chunk.dictionary_decode() for chunk in column.chunks], type=column.type.value_type
        )
    kind = column.type
    if pa.types.is_boolean(kind):
        return pc.if_else(column, "true", "false")
    if pa.types.is_integer(kind):
        return column.cast(pa.string())
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if text and not pc.any(pc.match_substring_regex(column, _ESCAPED.pattern)).as_py():
        return pc.binary_join_element_wise('"', column.cast(pa.string()), '"', "")
    return pa.chunked_array([pa.array([_json_value(v) for v in column.to_pylist()], pa.string())])
