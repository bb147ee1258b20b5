"""Consistency over a geography hierarchy on Spark, level by level (math in dp_ops.consistency).

A hierarchy is a chain of nested levels, coarsest first, each given by its key columns
(``[[], ["state"], ["state", "county"]]``: the one-row total, the states, the counties; or
``[["state"], ["state", "sex"]]`` for a table with its margin). A cell's parent is the cell of
the previous level with the same values of that level's keys. Each level's DataFrame has the
noisy count in ``noisy`` and its noise variance in ``noise_variance``.

:func:`gls_levels` adds the exact GLS estimate and its variance (two passes: one aggregation and
join per level bottom-up, one join per level top-down), :func:`integer_levels` the non-negative
integer counts that add up at every level (per parent, a simplex projection and a
largest-remainder rounding, both as window functions over the parent's children). Nothing is
collected to the driver; the tables are output-sized.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.persistence import keep

NOISY, NOISE_VAR = "noisy", "noise_variance"
ESTIMATE, ESTIMATE_VAR = "estimate", "estimate_variance"
COUNT = "consistent_count"
_S, _V, _Z, _W = "_sum_z", "_sum_w", "_z", "_w"


_EXACT = T.DecimalType(38, 12)


def _exact_sum(column: str) -> Column:
    """The sum of a double column, the same whatever order Spark adds the terms in (another
    partitioning, a partition computed again after a lost executor): each term is rounded to
    10^-12 and the terms are added exactly, as decimals. A float sum's last bits depend on that
    order, and the largest-remainder rounding turns them into released integers that differ by
    one between two computations of the same release."""
    return F.sum(F.col(column).cast(_EXACT)).cast("double")


def _materialize(df: DataFrame) -> DataFrame:
    """Compute an output-sized level now and keep it: each level builds on the previous ones,
    and without this every output would recompute the whole chain."""
    return keep(df)


def gls_levels(levels: Sequence[DataFrame], level_keys: Sequence[Sequence[str]]) -> list[DataFrame]:
    """Each level with ``estimate`` and ``estimate_variance`` added (see the module docstring).

    ``levels[i]`` has the columns ``level_keys[i]``, ``noisy`` and ``noise_variance`` (> 0,
    finite); every parent must have at least one child in the next level.
    """
    if len(levels) != len(level_keys):
        raise ValueError("give the key columns of every level")
    # bottom-up: z, w per node; S, V (sums over the children) per internal node
    deepest = len(levels) - 1
    up: dict[int, DataFrame] = {}
    up[deepest] = levels[deepest].withColumn(_Z, F.col(NOISY)).withColumn(_W, F.col(NOISE_VAR))
    for i in range(deepest - 1, -1, -1):
        keys = list(level_keys[i])
        kids = up[i + 1].groupBy(*keys).agg(_exact_sum(_Z).alias(_S), _exact_sum(_W).alias(_V))
        node = levels[i].join(kids, on=keys, how="inner") if keys else levels[i].crossJoin(kids)
        w = 1.0 / (1.0 / F.col(NOISE_VAR) + 1.0 / F.col(_V))
        up[i] = _materialize(
            node.withColumn(_W, w).withColumn(
                _Z, F.col(_W) * (F.col(NOISY) / F.col(NOISE_VAR) + F.col(_S) / F.col(_V))
            )
        )
    # top-down: share each parent's correction among its children in proportion to w
    out = [up[0].withColumn(ESTIMATE, F.col(_Z)).withColumn(ESTIMATE_VAR, F.col(_W))]
    for i in range(1, len(levels)):
        keys = list(level_keys[i - 1])
        parent = out[i - 1].select(
            *keys,
            F.col(ESTIMATE).alias("_pf"),
            F.col(ESTIMATE_VAR).alias("_pvar"),
            F.col(_S).alias("_psum_z"),
            F.col(_V).alias("_psum_w"),
        )
        node = up[i].join(parent, on=keys, how="inner") if keys else up[i].crossJoin(parent)
        share = F.col(_W) / F.col("_psum_w")
        out.append(
            _materialize(
                node.withColumn(ESTIMATE, F.col(_Z) + share * (F.col("_pf") - F.col("_psum_z")))
                .withColumn(
                    ESTIMATE_VAR, F.col(_W) + share * share * (F.col("_pvar") - F.col("_psum_w"))
                )
                .drop("_pf", "_pvar", "_psum_z", "_psum_w")
            )
        )
    internal = [_S, _V, _Z, _W]
    return [df.drop(*[c for c in internal if c in df.columns]) for df in out]


def integer_levels(
    levels: Sequence[DataFrame], level_keys: Sequence[Sequence[str]]
) -> list[DataFrame]:
    """Each level (with ``estimate``) with ``consistent_count``: non-negative integers, each
    parent equal to the sum of its children. Top-down: the total is rounded and clamped at zero,
    then each parent's children are projected onto ``{x >= 0, sum x = parent}`` and rounded by
    largest remainders (ties to the smaller key)."""
    total = levels[0].withColumn(
        COUNT, F.greatest(F.round(F.col(ESTIMATE)), F.lit(0.0)).cast("long")
    )
    out = [_materialize(total)]
    for i in range(1, len(levels)):
        keys = list(level_keys[i - 1])
        parent = out[i - 1].select(*keys, F.col(COUNT).alias("_t"))
        node = levels[i].join(parent, on=keys, how="inner") if keys else levels[i].crossJoin(parent)
        group = Window.partitionBy(*keys) if keys else Window.partitionBy(F.lit(0))
        order = group.orderBy(F.col(ESTIMATE).desc(), *[F.col(c) for c in level_keys[i]])
        running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        rank = F.row_number().over(order)
        cum = F.sum(ESTIMATE).over(running)
        node = node.withColumn("_rank", rank).withColumn("_cum", cum)
        ok = F.col(ESTIMATE) - (F.col("_cum") - F.col("_t")) / F.col("_rank") > 0
        node = node.withColumn("_k", F.max(F.when(ok, F.col("_rank"))).over(group))
        theta = F.max(
            F.when(F.col("_rank") == F.col("_k"), (F.col("_cum") - F.col("_t")) / F.col("_k"))
        ).over(group)
        projected = F.when(
            (F.col("_t") > 0) & F.col("_k").isNotNull(),
            F.greatest(F.col(ESTIMATE) - theta, F.lit(0.0)),
        ).otherwise(F.lit(0.0))
        node = node.withColumn("_x", projected)
        base = F.floor(F.col("_x") + F.lit(1e-9)).cast("long")
        node = node.withColumn("_base", base).withColumn("_frac", F.col("_x") - F.col("_base"))
        missing = F.col("_t") - F.sum("_base").over(group)
        by_frac = group.orderBy(F.col("_frac").desc(), *[F.col(c) for c in level_keys[i]])
        node = node.withColumn(
            COUNT,
            F.col("_base") + (F.row_number().over(by_frac) <= missing).cast("long"),
        )
        out.append(_materialize(node.drop("_t", "_rank", "_cum", "_k", "_x", "_base", "_frac")))
    return out
