"""Cell identities: a 128-bit salted hash of a cell's dimension values.

Bounding and aggregation group and shuffle by the two 64-bit halves (``_c1``, ``_c2``) instead
of the dimension values: fixed-width longs let Spark use hash aggregation throughout and move
less data through the shuffles. The dimension values come back by a join with the cells' keys
(the public keys, or the distinct cells of the data for private selection). Keys already on the
driver get their identities there (:func:`driver_cell_ids`): the same values, no Spark job.

Two distinct cells share an identity with probability about ``cells^2 / 2^129`` (below 10^-26 for
a million cells); the hashes are keyed by a secret per-release salt, so the data cannot be
crafted to collide.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from dp_ops.errors import InternalError
from dp_ops.xxhash64 import Column, Kind, spark_xxhash64
from pipelines import sql_text as sql

CELL_IDS = ("_c1", "_c2")


def cell_ids(dims: Sequence[str], salt: tuple[int, int, int, int]) -> list[str]:
    """The two halves of the identity of the cell ``dims`` (salt: four secret 64-bit integers),
    as SQL expressions for ``selectExpr`` (:mod:`pipelines.sql_text`)."""
    cols = [sql.name(d) for d in dims]
    return [
        sql.aliased(sql.keyed_hash(salt[:2], cols), CELL_IDS[0]),
        sql.aliased(sql.keyed_hash(salt[2:], cols), CELL_IDS[1]),
    ]


def with_cell_ids(
    df: DataFrame, dims: Sequence[str], salt: tuple[int, int, int, int], keep: Sequence[str]
) -> DataFrame:
    """``(keep..., _c1, _c2)``: the columns ``keep`` and the identity of each row's cell."""
    return df.selectExpr(*[sql.name(c) for c in keep], *cell_ids(dims, salt))


def cell_keys(df: DataFrame, dims: Sequence[str], salt: tuple[int, int, int, int]) -> DataFrame:
    """``(dims..., _c1, _c2)`` for each distinct cell of ``df`` (or each row of a key table)."""
    quoted = [sql.name(d) for d in dims]
    return df.selectExpr(*quoted).distinct().selectExpr(*quoted, *cell_ids(dims, salt))


def _hash_input(column: pa.ChunkedArray) -> tuple[Kind, Column, npt.NDArray[np.bool_] | None]:
    """A key column as Spark's ``xxhash64`` reads it: kind, values, nulls."""
    t = column.type
    nulls = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
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
    values = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(zero_copy_only=False)
    return kind, values, nulls


def driver_cell_ids(
    rows: pa.Table, dims: Sequence[str], salt: tuple[int, int, int, int]
) -> pa.Table:
    """``(dims..., _c1, _c2)``: the identity of each row's cell, as :func:`cell_ids` computes it
    in Spark, for key tables already on the driver (typed like the input's columns: strings,
    integers, booleans or dates)."""
    columns = [_hash_input(rows.column(d)) for d in dims]
    ids = [
        pa.array(spark_xxhash64(columns, rows.num_rows, leading=salt[:2]), pa.int64()),
        pa.array(spark_xxhash64(columns, rows.num_rows, leading=salt[2:]), pa.int64()),
    ]
    return (
        rows.select(list(dims))
        .append_column(CELL_IDS[0], ids[0])
        .append_column(CELL_IDS[1], ids[1])
    )
