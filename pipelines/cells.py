"""Cell identities: a 128-bit salted hash of a cell's dimension values.

Bounding and aggregation group and shuffle by the two 64-bit halves (``_c1``, ``_c2``) instead
of the dimension values: fixed-width longs let Spark use hash aggregation throughout and move
less data through the shuffles. The dimension values come back by a join with the cells' keys
(the public keys, or the distinct cells of the data for private selection).

Two distinct cells share an identity with probability about ``cells^2 / 2^129`` (below 10^-26 for
a million cells); the hashes are keyed by a secret per-release salt, so the data cannot be
crafted to collide.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

CELL_IDS = ("_c1", "_c2")


def cell_ids(dims: Sequence[str], salt: tuple[int, int, int, int]) -> list[Column]:
    """The two halves of the identity of the cell ``dims`` (salt: four secret 64-bit integers)."""
    cols = [F.col(d) for d in dims]
    return [
        F.xxhash64(F.lit(salt[0]), F.lit(salt[1]), *cols).alias(CELL_IDS[0]),
        F.xxhash64(F.lit(salt[2]), F.lit(salt[3]), *cols).alias(CELL_IDS[1]),
    ]


def with_cell_ids(
    df: DataFrame, dims: Sequence[str], salt: tuple[int, int, int, int], keep: Sequence[str]
) -> DataFrame:
    """``(keep..., _c1, _c2)``: the columns ``keep`` and the identity of each row's cell."""
    return df.select(*[F.col(c) for c in keep], *cell_ids(dims, salt))


def cell_keys(df: DataFrame, dims: Sequence[str], salt: tuple[int, int, int, int]) -> DataFrame:
    """``(dims..., _c1, _c2)`` for each distinct cell of ``df`` (or each row of a key table)."""
    return df.select(*dims).distinct().select(*dims, *cell_ids(dims, salt))
