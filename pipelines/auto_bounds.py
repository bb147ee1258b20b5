"""Bounds the release chooses itself, privately (``upper: auto``, ``lower: auto``).

Before a table with such bounds is measured, each privacy unit contributes one value per
column: its largest (for ``upper``) or its smallest (for ``lower``). Over public candidates (0
and powers of two, :func:`dp_ops.quantiles.geometric_candidates`), the exponential mechanism
(:func:`dp_ops.quantiles.private_quantile`) picks about the ``auto_quantile`` of the largest
values (``1 - auto_quantile`` of the smallest): epsilon-DP in the units, with the table's
``auto_epsilon`` split equally over its chosen bounds. What follows is post-processing of that
choice and the spec: the other bound moves one candidate away if the two would meet, the
granularity (when the spec gives none) is the default for the chosen bounds, and the table is
planned again with the same budget and noise family (:func:`resolve`), so the release spends
exactly what it was charged.

Draws come from keyed streams under the release's key and the bound's name: computing the
choice again gives the same bounds.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dp_ops.errors import InternalError
from dp_ops.fixed_point import MAX_STEPS, default_granularity
from dp_ops.keyed_stream import KeyedStreams, label_id
from dp_ops.quantiles import geometric_candidates, private_quantile
from pipelines.plan import TablePlan, plan_table, plan_table_zcdp
from pipelines.release import Secrets
from pipelines.spec import MetricSpec, TableSpec

SMALLEST = 2.0**-20
"""The smallest positive candidate; candidates double from it."""
STEPS = 72
"""Candidates per sign: SMALLEST * 2^j for j < STEPS (up to 2^51)."""


def candidates(signed: bool, granularity: float | None) -> list[float]:
    """Public candidates for a bound: with a granularity the spec fixes, only bounds within the
    grid's range (MAX_STEPS steps)."""
    out = geometric_candidates(SMALLEST, STEPS, signed)
    if granularity is None:
        return out
    top = granularity * MAX_STEPS
    return [c for c in out if abs(c) <= top]


def _counts(
    per_unit: DataFrame, grids: dict[tuple[str, str], list[float]]
) -> tuple[dict[tuple[str, str], list[int]], int]:
    """Per (column, side): the units whose value (largest for upper, smallest for lower) is at
    most each candidate; and the number of units. One aggregation for every chosen bound."""
    names = [(key, i) for key, grid in grids.items() for i in range(len(grid))]
    aggs = [
        F.sum(
            (
                F.col(f"{'max' if side == 'upper' else 'min'}_{col}")
                <= F.lit(grids[(col, side)][i])
            ).cast("long")
        )
        for (col, side), i in names
    ]
    row = per_unit.agg(F.count(F.lit(1)), *aggs).first()  # safe: counts, fed only to the mechanism
    if row is None:
        raise InternalError("an aggregation returned no row")
    values = [int(x or 0) for x in list(row)[1:]]
    out: dict[tuple[str, str], list[int]] = {key: [] for key in grids}
    for (key, _), v in zip(names, values, strict=True):
        out[key].append(v)
    return out, int(row[0])


def _choose(
    secrets: Secrets,
    label: str,
    grid: list[float],
    at_or_below: list[int],
    n: int,
    q: Fraction,
    epsilon: Fraction,
) -> float:
    streams = KeyedStreams(secrets.key, label_id(label).reshape(1, 2))
    return float(private_quantile(streams, grid, at_or_below, n, q, epsilon)[0])


def choose_bounds(
    df: DataFrame, table: TableSpec, unit: str, secrets: Secrets, epsilon: Fraction
) -> dict[str, tuple[float, float, float]]:
    """Per column with auto bounds: (lower, upper, granularity) chosen privately (see the module
    docstring). ``epsilon``: all the table's chosen bounds together."""
    sides = [
        (m.column, side) for m in _auto_metrics(table) for side in m.auto if side != "granularity"
    ]
    sides = list(dict.fromkeys(sides))
    if not sides:
        return {}
    each = epsilon / len(sides)
    columns = sorted({c for c, _ in sides if c is not None})
    per_unit = df.groupBy(unit).agg(
        *[F.max(F.col(c).cast("double")).alias(f"max_{c}") for c in columns],
        *[F.min(F.col(c).cast("double")).alias(f"min_{c}") for c in columns],
    )
    q = Fraction(table.auto_quantile).limit_denominator(1000)
    given = {
        m.column or "": None if "granularity" in m.auto else m.granularity
        for m in _auto_metrics(table)
    }
    grids = {(c or "", side): candidates(True, given[c or ""]) for c, side in sides}
    counts, n = _counts(per_unit, grids)
    out: dict[str, tuple[float, float, float]] = {}
    for m in _auto_metrics(table):
        column = m.column or ""
        if column in out:
            continue
        bounds = {"lower": float(m.lower or 0.0), "upper": float(m.upper or 0.0)}
        for side in ("lower", "upper"):
            if side in m.auto:
                label = f"{table.name}/auto/{column}/{side}"
                at = q if side == "upper" else 1 - q
                grid = grids[(column, side)]
                bounds[side] = _choose(secrets, label, grid, counts[(column, side)], n, at, each)
        lower, upper = _apart(
            bounds["lower"], bounds["upper"], m.auto, candidates(True, given[column])
        )
        granularity = (
            m.granularity if given[column] is not None else default_granularity(lower, upper)
        )
        out[column] = (lower, upper, float(granularity or 1.0))
    return out


def _auto_metrics(table: TableSpec) -> list[MetricSpec]:
    return [m for m in table.metrics if m.auto and m.column is not None]


def _apart(
    lower: float, upper: float, auto: tuple[str, ...], grid: list[float]
) -> tuple[float, float]:
    """The bounds with lower < upper: the chosen one moves to the next candidate (upper up,
    else lower down) when they meet or cross."""
    if lower < upper:
        return lower, upper
    if "upper" in auto:
        above = [c for c in grid if c > lower]
        return lower, above[0] if above else lower + 1.0
    below = [c for c in grid if c < upper]
    return (below[-1] if below else upper - 1.0), upper


def resolve(df: DataFrame, plan: TablePlan, unit: str, secrets: Secrets) -> TablePlan:
    """The table's plan with its auto bounds chosen on ``df`` (the valid input) and its
    measurements planned again at the same budget with the same noise family: the same cost.
    A table without auto bounds is returned as it is."""
    table = plan.table
    if not table.auto_bounds:
        return plan
    chosen = choose_bounds(df, table, unit, secrets, plan.auto_epsilon)
    metrics = tuple(
        dataclasses.replace(
            m, lower=chosen[m.column][0], upper=chosen[m.column][1], granularity=chosen[m.column][2]
        )
        if m.auto and m.column in chosen
        else m
        for m in table.metrics
    )
    resolved = dataclasses.replace(table, metrics=metrics)
    if plan.rho is not None:
        again = plan_table_zcdp(resolved, plan.rho, plan.family)
    else:
        strategy = plan.selection.strategy if plan.selection is not None else None
        again = plan_table(resolved, plan.epsilon, plan.delta, plan.family, strategy)
    same = (again.epsilon, again.delta, again.rho, again.auto_epsilon, again.zcdp_cost) == (
        plan.epsilon,
        plan.delta,
        plan.rho,
        plan.auto_epsilon,
        plan.zcdp_cost,
    )
    if not same:
        raise InternalError("bounds chosen by the release changed what the table spends")
    return again
