"""Cell identities: a 64-bit salted hash of a cell's dimension values.

Bounding and aggregation group and shuffle by the identity (``_cell_id``) instead of the
dimension values: one fixed-width long lets Spark use hash aggregation throughout and move little
data through the shuffles. The dimension values come back by a join with the cells' keys (the
public keys, or the distinct cells of the data for private selection). Keys already on the driver
get their identities there (:func:`driver_cell_ids`): the same values, no Spark job.

Two distinct cells share an identity with probability about ``cells^2 / 2^65`` (below 10^-9 for
100,000 cells). Such cells would be merged, and a merged cell released under two names, so every
set of keys is checked before it meets the cells (:func:`require_distinct` on the driver,
:func:`require_distinct_frame` in Spark): a collision stops the release with
:class:`~dp_ops.errors.RerunError` before anything is written, and a rerun draws a new salt. The
keys checked are every cell the data can hold (the data's own cells, or the declared cells that
validation keeps it within) or, for public partitions, the public keys: a cell of the data outside
them that shares a key's identity would add its rows to that key's cell (still bounded and noised
as one cell, so the privacy guarantee holds; the chance is about ``keys * cells / 2^64``).
The salt is secret and new for every release; a collision crafted into the data would be
caught by the same checks, or merge into a public key's cell under the same guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from dp_ops.errors import InternalError, RerunError
from dp_ops.xxhash64 import Column, Kind, spark_xxhash64
from pipelines import sql_text as sql
from pipelines.persistence import keep

CELL_ID = "_cell_id"
Salt = tuple[int, int]
"""Two secret 64-bit integers that key the identities of one release."""


def cell_id(dims: Sequence[str], salt: Salt) -> str:
    """The identity of the cell ``dims``, as SQL text for ``selectExpr``
    (:mod:`pipelines.sql_text`), named ``_cell_id``."""
    return sql.aliased(sql.keyed_hash(salt, [sql.name(d) for d in dims]), CELL_ID)


def with_cell_ids(df: DataFrame, dims: Sequence[str], salt: Salt, keep: Sequence[str]) -> DataFrame:
    """``(keep..., _cell_id)``: the columns ``keep`` and the identity of each row's cell."""
    return df.selectExpr(*[sql.name(c) for c in keep], cell_id(dims, salt))


def cell_keys(df: DataFrame, dims: Sequence[str], salt: Salt) -> DataFrame:
    """``(dims..., _cell_id)`` for each distinct cell of ``df`` (or each row of a key table)."""
    quoted = [sql.name(d) for d in dims]
    return df.selectExpr(*quoted).distinct().selectExpr(*quoted, cell_id(dims, salt))


def _collision(table: str) -> RerunError:
    return RerunError(
        f"table {table!r}: two of its cells share a cell identity under this run's secret salt, "
        "a rare chance; the release stopped before writing anything. Run it again (with the same "
        "release id, which the ledger does not charge twice): the run draws a new salt"
    )


def require_distinct(keys: pa.Table, table: str) -> pa.Table:
    """``keys`` (``_cell_id`` and the dimension values, each cell once), if no two of them share
    an identity; else :class:`RerunError`. On the driver, no Spark job."""
    if pc.count_distinct(keys.column(CELL_ID)).as_py() != keys.num_rows:
        raise _collision(table)
    return keys


def require_distinct_frame(keys: DataFrame, table: str) -> DataFrame:
    """``keys`` as :func:`require_distinct` checks them, for keys in Spark: computed once (kept,
    :func:`~pipelines.persistence.keep`, for the caller's join) and checked by one small job."""
    kept = keep(keys)
    shared = kept.groupBy(sql.expr(sql.name(CELL_ID))).agg(sql.expr("count(1)", "_n"))
    if not shared.where("_n > 1").isEmpty():
        raise _collision(table)
    return kept


def _hash_input(column: pa.ChunkedArray) -> tuple[Kind, Column, npt.NDArray[np.bool_] | None]:
    """A key column as Spark's ``xxhash64`` reads it: kind, values, nulls."""
    t = column.type
    nulls = column.is_null().to_numpy() if column.null_count else None
    if pa.types.is_string(t):
        flat = pc.fill_null(column, "").combine_chunks()
        offsets = np.frombuffer(flat.buffers()[1], np.int32, len(flat) + 1, flat.offset * 4)
        data = np.frombuffer(flat.buffers()[2] or b"", np.uint8)
        return "bytes", (data, offsets.astype(np.int64)), nulls
    if pa.types.is_date32(t):  # days since the epoch, as Spark hashes a date
        column = column.cast(pa.int32())
    elif not (pa.types.is_boolean(t) or t in (pa.int8(), pa.int16(), pa.int32(), pa.int64())):
        raise InternalError(f"no driver-side cell identity for keys of type {t}")
    kind: Kind = "long" if t == pa.int64() else "int"
    values = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy()
    return kind, values, nulls


def driver_cell_ids(rows: pa.Table, dims: Sequence[str], salt: Salt) -> pa.Table:
    """``(dims..., _cell_id)``: the identity of each row's cell, as :func:`cell_id` computes it
    in Spark, for key tables already on the driver (typed like the input's columns: strings,
    integers, booleans or dates)."""
    columns = [_hash_input(rows.column(d)) for d in dims]
    ids = pa.array(spark_xxhash64(columns, rows.num_rows, leading=salt), pa.int64())
    return rows.select(list(dims)).append_column(CELL_ID, ids)
