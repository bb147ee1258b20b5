"""Bounds the release chooses itself, privately (``upper: auto``, ``lower: auto``,
``max_partitions: auto``).

Before a table with such bounds is measured, each privacy unit contributes one value per
column: its largest (for ``upper``) or its smallest (for ``lower``); and, for L0, its number of
distinct cells in the table. Over public candidates (0 and powers of two,
:func:`dp_ops.quantiles.geometric_candidates`; for L0 the powers of two from 1, at most the
declared cells), the exponential mechanism
(:func:`dp_ops.quantiles.private_quantile`) picks about the ``auto_quantile`` of the largest
values (``1 - auto_quantile`` of the smallest; ``auto_quantile`` of the cell counts):
epsilon-DP in the units, with the table's
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
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dp_ops.errors import InternalError
from dp_ops.fixed_point import MAX_STEPS, default_granularity
from dp_ops.keyed_stream import KeyedStreams, label_id
from dp_ops.quantiles import geometric_candidates, private_quantile
from pipelines.plan import TablePlan, plan_table, plan_table_zcdp
from pipelines.release import Secrets
from pipelines.spec import HISTOGRAM_KINDS, MetricSpec, TableSpec, quantile_grid

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


L0_STEPS = 17
"""Candidates for ``max_partitions: auto``: 1, 2, 4, ..., 2^16 cells (at most the table's
declared cells, when it declares them)."""
CELLS = "_cells"
"""Each unit's number of distinct cells in the table: the statistic L0 is chosen from."""


def l0_candidates(max_cells: int | None) -> list[float]:
    """Public candidates for L0: powers of two, and the declared number of cells if smaller."""
    out = [float(2**j) for j in range(L0_STEPS)]
    if max_cells is None or max_cells >= out[-1]:
        return out
    return [*(c for c in out if c < max_cells), float(max_cells)]


@dataclass(frozen=True)
class Choice:
    """One bound the release chooses: the stream it draws from, the per-unit statistic (a
    column of :func:`per_unit_statistics`), the public candidates and the quantile aimed at."""

    label: str
    statistic: str
    grid: tuple[float, ...]
    quantile: Fraction
    side: tuple[str, str] | None = None
    """(column, ``lower`` or ``upper``); None for L0."""


@dataclass(frozen=True)
class ChosenBounds:
    sides: dict[tuple[str, str], float]
    """(column, ``lower`` or ``upper``) -> the chosen bound (:func:`with_chosen` applies it)."""
    max_partitions: int | None = None
    """The chosen L0, for ``max_partitions: auto``."""


def choices(table: TableSpec, max_cells: int | None = None) -> list[Choice]:
    """Every bound of the table the release chooses, in a fixed order."""
    q = Fraction(table.auto_quantile).limit_denominator(1000)
    out = []
    given = _given_granularity(table)
    sides = [
        (m.column, side) for m in _auto_metrics(table) for side in m.auto if side != "granularity"
    ]
    for column, side in dict.fromkeys(sides):
        out.append(
            Choice(
                f"{table.name}/auto/{column}/{side}",
                f"{'max' if side == 'upper' else 'min'}_{column}",
                tuple(candidates(True, given.get(column or ""))),
                q if side == "upper" else 1 - q,
                (column or "", side),
            )
        )
    if table.bounds.auto_partitions:
        out.append(
            Choice(f"{table.name}/auto/max_partitions", CELLS, tuple(l0_candidates(max_cells)), q)
        )
    return out


def per_unit_statistics(df: DataFrame, table: TableSpec, unit: str) -> DataFrame:
    """One row per unit: its largest and smallest value of each column with auto bounds, and
    (for ``max_partitions: auto``) its number of distinct cells."""
    columns = sorted({m.column for m in _auto_metrics(table) if m.column is not None})
    cells = (
        [F.count_distinct(F.struct(*table.dimensions)).alias(CELLS)]
        if table.bounds.auto_partitions
        else []
    )
    return df.groupBy(unit).agg(
        *[F.max(F.col(c).cast("double")).alias(f"max_{c}") for c in columns],
        *[F.min(F.col(c).cast("double")).alias(f"min_{c}") for c in columns],
        *cells,
    )


def choice_counts(per_unit: DataFrame, chosen: list[Choice]) -> tuple[list[list[int]], int]:
    """Per choice: the units whose statistic is at most each candidate; and the number of
    units. One aggregation for every choice of the table."""
    aggs = [F.sum((F.col(c.statistic) <= F.lit(x)).cast("long")) for c in chosen for x in c.grid]
    row = per_unit.agg(F.count(F.lit(1)), *aggs).first()  # safe: counts, fed only to the mechanism
    if row is None:
        raise InternalError("an aggregation returned no row")
    values = iter(int(x or 0) for x in list(row)[1:])
    return [[next(values) for _ in c.grid] for c in chosen], int(row[0])


def draw(
    streams: KeyedStreams, choice: Choice, at_or_below: list[int], n: int, epsilon: Fraction
) -> np.ndarray:
    """The mechanism: one chosen candidate per stream, epsilon-DP in the units."""
    return private_quantile(streams, choice.grid, at_or_below, n, choice.quantile, epsilon)


def choose_bounds(
    df: DataFrame,
    table: TableSpec,
    unit: str,
    secrets: Secrets,
    epsilon: Fraction,
    max_cells: int | None = None,
) -> ChosenBounds:
    """The table's auto bounds chosen privately (see the module docstring). ``epsilon``: all the
    table's chosen bounds together, split equally; ``max_cells``: the table's declared cells."""
    chosen = choices(table, max_cells)
    if not chosen:
        return ChosenBounds({})
    each = epsilon / len(chosen)
    counts, n = choice_counts(per_unit_statistics(df, table, unit), chosen)
    picked = {
        c.label: float(
            draw(KeyedStreams(secrets.key, label_id(c.label).reshape(1, 2)), c, k, n, each)[0]
        )
        for c, k in zip(chosen, counts, strict=True)
    }
    sides = {c.side: picked[c.label] for c in chosen if c.side is not None}
    l0 = next((int(picked[c.label]) for c in chosen if c.side is None), None)
    return ChosenBounds(sides, l0)


def with_chosen(m: MetricSpec, chosen: ChosenBounds, table: TableSpec) -> MetricSpec:
    """A metric with the bounds chosen for its column in place of its placeholders: a sum's
    range and (unless the spec fixes it) its grid, or a quantile's range and edges. The other
    bound moves one candidate away if the two would meet."""
    if not m.auto or m.column is None:
        return m
    given = _given_granularity(table).get(m.column)
    lower = chosen.sides[(m.column, "lower")] if "lower" in m.auto else float(m.lower or 0.0)
    upper = chosen.sides[(m.column, "upper")] if "upper" in m.auto else float(m.upper or 0.0)
    lower, upper = _apart(lower, upper, m.auto, candidates(True, given))
    if m.kind == "quantiles":
        edges = quantile_grid(lower, upper, len(m.edges) - 1)
        return dataclasses.replace(m, lower=lower, upper=upper, edges=edges)
    granularity = default_granularity(lower, upper) if "granularity" in m.auto else m.granularity
    return dataclasses.replace(m, lower=lower, upper=upper, granularity=granularity)


def _given_granularity(table: TableSpec) -> dict[str, float | None]:
    """Per column with auto bounds: the sum grid the spec fixes (the chosen bounds must stay in
    its range), or None."""
    return {
        m.column or "": None if "granularity" in m.auto else m.granularity
        for m in _auto_metrics(table)
        if m.kind not in HISTOGRAM_KINDS
    }


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


def resolve(
    df: DataFrame, plan: TablePlan, unit: str, secrets: Secrets, max_cells: int | None = None
) -> TablePlan:
    """The table's plan with its auto bounds chosen on ``df`` (the valid input) and its
    measurements planned again at the same budget with the same noise family: the same cost.
    ``max_cells``: the table's declared cells (public), which L0 need not exceed. A table
    without auto bounds is returned as it is."""
    table = plan.table
    if not table.auto_bounds:
        return plan
    chosen = choose_bounds(df, table, unit, secrets, plan.auto_epsilon, max_cells)
    metrics = tuple(with_chosen(m, chosen, table) for m in table.metrics)
    bounds = table.bounds
    if chosen.max_partitions is not None:
        bounds = dataclasses.replace(bounds, max_partitions=chosen.max_partitions)
    resolved = dataclasses.replace(table, metrics=metrics, bounds=bounds)
    if plan.rho is not None:
        again = plan_table_zcdp(resolved, plan.rho, plan.family)
    else:
        strategy = plan.selection.strategy if plan.selection is not None else None
        again = plan_table(resolved, plan.epsilon, plan.delta, plan.family, strategy)

    def cost(p: TablePlan) -> tuple[object, ...]:
        return (p.epsilon, p.delta, p.rho, p.auto_epsilon, p.choice_epsilon, p.zcdp_cost)

    same = cost(again) == cost(plan)
    if not same:
        raise InternalError("bounds chosen by the release changed what the table spends")
    return again
