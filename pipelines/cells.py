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

from pyspark.sql import DataFrame

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
