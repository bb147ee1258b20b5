"""The audit of bounds a release chooses itself (``upper: auto``, ``max_partitions: auto``;
:mod:`pipelines.auto_bounds`), for ``dprelease audit``.

Each chosen bound is one draw of the exponential mechanism from the units' statistic (each
unit's largest or smallest value of a column, or its number of cells). The audit builds, for
each bound of the spec, a dataset on which one more unit moves the mechanism's utilities as far
as its sensitivity allows and in opposite directions: for the ``q = num / den`` quantile, ``num``
units at a low candidate and ``den - num`` at a high one, so that the candidates between them
are best; the extra unit lies beyond every candidate, on the side whose count it leaves alone
when ``num >= den - num`` (else on the other). The engine computes the units' statistics and the
candidates' counts on both datasets (:func:`pipelines.auto_bounds.per_unit_statistics`,
:func:`~pipelines.auto_bounds.choice_counts`), and draws the bound ``BOUND_DRAWS`` times
``replicates`` times from each with independent keys (:func:`~pipelines.auto_bounds.draw`, as a
release does). The event is fixed in advance (:func:`event_cut`: the chosen bound is in the
favoured group), so every draw counts. The claim is the bound's epsilon; the control is the same
mechanism at twice it.
"""

from __future__ import annotations

import dataclasses
import math
import secrets as pysecrets
from fractions import Fraction

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dp_ops.audit import epsilon_lower_bound
from dp_ops.keyed_stream import KeyedStreams, label_id
from pipelines.audit import MeasurementAudit
from pipelines.auto_bounds import (
    Choice,
    choice_counts,
    choices,
    draw,
    per_unit_statistics,
)
from pipelines.plan import TablePlan

BOUND_DRAWS = 100
"""A chosen bound is drawn this many times ``replicates`` times: its draws need no Spark job,
and a bound's small epsilon needs many to be seen."""
CHUNK = 1_000_000
"""Draws made at once (the streams' buffers grow with them)."""
CELL = "_cell"


def _group(
    spark: SparkSession, unit: str, first: int, units: int, cells: int, values: dict[str, float]
) -> DataFrame:
    """``units`` units numbered from ``first``, each with one row in each of ``cells`` cells,
    every row with ``values``."""
    i = F.col("id")
    return spark.range(units * cells).select(
        (F.lit(first) + F.floor(i / cells)).cast("long").alias(unit),
        (i % cells).cast("long").alias(CELL),
        *[F.lit(v).cast("double").alias(c) for c, v in values.items()],
    )


def _design(choice: Choice) -> tuple[bool, int]:
    """(whether the extra unit lies above every candidate, and the size of the group of
    candidates it favours: about a tenth of them, where the loss is near epsilon and the event
    still common)."""
    num, den = choice.quantile.numerator, choice.quantile.denominator
    return num >= den - num, max(1, len(choice.grid) // 10)


def event_cut(choice: Choice) -> float:
    """The threshold (on the grid's indices) between the favoured group and the rest: public,
    fixed before any draw."""
    beyond_top, k = _design(choice)
    return len(choice.grid) - k - 0.5 if beyond_top else k - 0.5


def neighbours(
    spark: SparkSession, plan: TablePlan, unit: str, choice: Choice
) -> tuple[DataFrame, DataFrame]:
    """(the dataset, its neighbour with one unit more) for one chosen bound (module docstring)."""
    grid = choice.grid
    num, den = choice.quantile.numerator, choice.quantile.denominator
    beyond_top, k = _design(choice)
    low, high = (grid[0], grid[-k]) if beyond_top else (grid[k], grid[-1])
    extreme = 2 * grid[-1] + 1 if beyond_top else 2 * grid[0] - 1
    columns = {m.column for m in plan.table.metrics if m.auto and m.column is not None}
    zeros = dict.fromkeys(sorted(columns), 0.0)

    def units(first: int, count: int, at: float) -> DataFrame:
        if choice.side is None:  # L0: the statistic is the unit's number of cells
            return _group(spark, unit, first, count, int(at), zeros)
        return _group(spark, unit, first, count, 1, zeros | {choice.side[0]: at})

    base = units(0, num, low).unionByName(units(num, den - num, high))
    return base, base.unionByName(units(den, 1, extreme))


def _draws(choice: Choice, counts: list[int], n: int, epsilon: Fraction, draws: int) -> np.ndarray:
    """``draws`` independent choices (as indices of the grid) under a fresh key, in chunks."""
    key, grid = pysecrets.token_bytes(32), np.asarray(choice.grid)
    out = []
    for start in range(0, draws, CHUNK):
        ids = np.tile(label_id(choice.label).reshape(1, 2), (min(CHUNK, draws - start), 1))
        ids[:, 1] ^= np.arange(start, start + len(ids), dtype=ids.dtype)
        picked = draw(KeyedStreams(key, ids), choice, counts, n, epsilon)
        out.append(np.searchsorted(grid, picked).astype(float))
    return np.concatenate(out)


def audit_bound_choices(
    spark: SparkSession,
    plan: TablePlan,
    unit: str,
    replicates: int,
    alpha: float,
    max_cells: int | None = None,
) -> list[MeasurementAudit]:
    """Each bound the table's release chooses, audited with its control (module docstring)."""
    table = dataclasses.replace(plan.table, dimensions=(CELL,))
    chosen = choices(plan.table, max_cells)
    if not chosen:
        return []
    each = plan.auto_epsilon / len(chosen)
    draws = BOUND_DRAWS * replicates
    out = []
    for c in chosen:
        counted = [
            choice_counts(per_unit_statistics(df, table, unit), [c])
            for df in neighbours(spark, plan, unit, c)
        ]
        (base, n_base), (extra, n_extra) = counted
        bounds = []
        for eps in (each, 2 * each):
            a = _draws(c, extra[0], n_extra, eps, draws)
            b = _draws(c, base[0], n_base, eps, draws)
            bound = epsilon_lower_bound(a, b, [event_cut(c)], alpha / (2 * len(chosen)))
            bounds.append(bound if math.isfinite(bound) else 0.0)
        lower, control = bounds
        out.append(
            MeasurementAudit(
                plan.table.name,
                "auto " + ("/".join(c.side) if c.side else "max_partitions"),
                "exponential_mechanism",
                float(each),
                0.0,
                lower,
                control,
                draws,
            )
        )
    return out
