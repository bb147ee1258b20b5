"""A black-box audit of a spec's mechanisms, run by the release engine itself (``dprelease
audit``).

For a table, the audit builds two datasets of ``replicates`` cells each. In the first every
cell holds one person with one row of middling values; the second adds to every cell one more
person who breaks every bound (three times ``max_rows_per_partition`` rows, values a thousand
ranges beyond the clamp on the side that moves the measurement most). The engine bounds,
aggregates and noises both (:func:`pipelines.release.noisy_measurements`, with the plan the spec
gets, its budget share included); cells are independent, so each dataset gives ``replicates``
draws of each measurement of one cell. From them :func:`dp_ops.audit.epsilon_lower_bound` gives,
at level ``alpha``, an epsilon that the mechanism certainly exceeds, next to the epsilon it claims
for one cell (the measurement's per-cell sensitivity over its noise: a cell's share of the
table's budget). Thresholds come from a fifth of the draws, the bound from the rest.

The planted control is the same mechanism with its noise halved (standard deviation): its true
epsilon is twice the claim, and the audit must catch it. A control that is not caught means the
audit had too few replicates to say anything.

A table with levels or a suite is audited level by level (:func:`levels_apart`). Private selection
(pipelines.audit_selection) and bounds the release chooses (pipelines.audit_bounds) are audited
beside.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dp_ops import accounting
from dp_ops.audit import cuts_between, epsilon_lower_bound
from pipelines.plan import (
    Categorical,
    NoiseParams,
    TablePlan,
    categoricals,
    histograms,
    value_columns,
)
from pipelines.release import Secrets, noisy_measurements
from pipelines.spark_compat import to_arrow
from pipelines.spec import HISTOGRAM_KINDS, PublicPartitions, TableSpec

REPLICATE = "_replicate"
GAUSSIAN_DELTA = 1e-3
"""The delta at which a Gaussian mechanism's epsilon is stated and audited (any point of its
privacy curve is a claim it must meet)."""
EXTRA_UNIT = 10**12
PILOT, CUTS = 5, 8
"""One draw in PILOT chooses the CUTS thresholds; the others give the bound."""


@dataclass(frozen=True)
class MeasurementAudit:
    table: str
    measurement: str
    mechanism: str
    claimed_epsilon: float
    delta: float
    epsilon_lower_bound: float
    control_lower_bound: float
    replicates: int

    @property
    def exceeded(self) -> bool:
        """The claim is broken: the mechanism certainly leaks more than it says."""
        return self.epsilon_lower_bound > self.claimed_epsilon

    @property
    def control_caught(self) -> bool:
        return self.control_lower_bound > self.claimed_epsilon


def claimed_epsilon(m: NoiseParams) -> tuple[float, float]:
    """(epsilon, delta) the measurement claims for one cell: its per-cell sensitivity over its
    noise; a Gaussian's zCDP stated at GAUSSIAN_DELTA."""
    delta_cell = Fraction(m.sensitivity.per_partition)
    if m.mechanism == "discrete_laplace":
        return float(delta_cell / m.parameter), 0.0
    rho = delta_cell * delta_cell / (2 * m.parameter)
    return accounting.zcdp_epsilon(float(rho), GAUSSIAN_DELTA), GAUSSIAN_DELTA


def halved(plan: TablePlan) -> TablePlan:
    """The planted control: every measurement with half its noise's standard deviation."""
    factor = {"discrete_laplace": Fraction(1, 2), "discrete_gaussian": Fraction(1, 4)}
    return dataclasses.replace(
        plan,
        measurements=tuple(
            dataclasses.replace(m, parameter=m.parameter * factor[m.mechanism])
            for m in plan.measurements
        ),
    )


def _values(table: TableSpec) -> dict[str, tuple[float, float]]:
    """Per value column: (a middling value, an extreme value beyond the clamp)."""
    out: dict[str, tuple[float, float]] = {}
    for m in table.metrics:
        if m.column is None or m.column in out:
            continue
        if m.kind in HISTOGRAM_KINDS:
            lo, hi = m.edges[0], m.edges[-1]
        else:
            lo, hi = float(m.lower or 0.0), float(m.upper or 0.0)
        width = max(hi - lo, 1.0)
        out[m.column] = ((lo + hi) / 2, hi + 1000 * width)
    return out


def _extreme_side(plan: TablePlan) -> dict[str, float]:
    """The extreme value per column that moves its measurements most: the bound farthest from
    the column's center (sums are centered when the table counts rows)."""
    out = {}
    spans = _values(plan.table)
    for v in value_columns(plan.table):
        lo, hi = v.lower, v.upper
        center = v.center * v.granularity
        width = max(hi - lo, 1.0)
        out[v.column] = (
            hi + 1000 * width if abs(hi - center) >= abs(lo - center) else lo - 1000 * width
        )
    for column, (_, extreme) in spans.items():
        out.setdefault(column, extreme)
    return out


def replicate_data(
    spark: SparkSession, plan: TablePlan, unit: str, replicates: int
) -> tuple[DataFrame, DataFrame]:
    """(the dataset, its neighbour with one bound-breaking person more in every cell)."""
    middle = {c: mid for c, (mid, _) in _values(plan.table).items()}
    extreme = _extreme_side(plan)
    rid = F.col("id")
    base = spark.range(replicates).select(
        rid.alias(unit), rid.alias(REPLICATE), *[F.lit(v).alias(c) for c, v in middle.items()]
    )
    rows = 3 * plan.table.bounds.max_rows_per_partition
    extra = spark.range(replicates * rows).select(
        (F.lit(EXTRA_UNIT) + F.floor(rid / rows)).cast("long").alias(unit),
        F.floor(rid / rows).cast("long").alias(REPLICATE),
        *[F.lit(extreme[c]).alias(c) for c in middle],
    )
    return base, base.unionByName(extra)


def audit_plan(plan: TablePlan) -> TablePlan:
    """The table's plan over one replicate dimension, public: the same bounds, metrics and
    noise, so the same mechanisms."""
    table = dataclasses.replace(
        plan.table,
        name=f"audit_{plan.table.name}",
        dimensions=(REPLICATE,),
        partitions=PublicPartitions("cross_product"),
    )
    return dataclasses.replace(plan, table=table, selection=None)


def _column(plan: TablePlan, m: NoiseParams) -> str:
    """The noised column that the extra person moves: for a histogram, the bin its extreme value
    falls in (the first or the last); else the measurement's own."""
    extreme = _extreme_side(plan)
    for h in histograms(plan.table):
        if h.measure == m.column:
            above = extreme[h.metric.column or ""] >= h.metric.edges[-1]
            return h.count_column(h.bins - 1 if above else 0)
    return m.column


def _draws(df: DataFrame, plan: TablePlan, unit: str, columns: list[str]) -> dict[str, np.ndarray]:
    noisy = noisy_measurements(df, plan, unit, Secrets.new()).select(*columns)
    table = to_arrow(noisy)  # synthetic replicates, never the user's data
    return {c: np.asarray(table.column(c).to_pylist(), dtype=float) for c in columns}


def _category_design(categories: int, s: int, epsilon: float, replicates: int) -> int:
    """Persons per category (all but the last) in each audited cell: where the control (the
    mechanism at twice ``epsilon``) is easiest to tell apart from its neighbour at this many
    draws, from the mechanism's exact probabilities of naming the last category first (a
    design choice from public numbers, not a claim)."""
    draws = replicates - replicates // PILOT
    best, best_n = -math.inf, 0
    for n in range(400):
        others = (categories - 1) * math.exp(2 * epsilon * n / s)
        p, q = 1 / (1 + others), math.exp(2 * epsilon) / (math.exp(2 * epsilon) + others)
        if p <= 0 or q >= 1:
            break
        score = math.log(q / p) - 6 * math.sqrt((1 - p) / (draws * p) + (1 - q) / (draws * q))
        if score > best:
            best, best_n = score, n
    return best_n


def _category_data(
    spark: SparkSession, plan: TablePlan, unit: str, c: Categorical, replicates: int
) -> tuple[DataFrame, DataFrame]:
    """(the dataset, its neighbour) for a mode or top-k: in every cell, ``n`` persons with one
    row in each category but the last (:func:`_category_design`); the neighbour adds one
    person with every row allowed in the last category."""
    m = c.metric
    cats, s = m.categories, plan.table.bounds.max_rows_per_partition
    n = _category_design(len(cats), s, float(plan.cell_epsilon(m)) / m.k, replicates)
    middle = {col: mid for col, (mid, _) in _values(plan.table).items() if col != m.column}
    rid = F.col("id")
    per_cell = n * (len(cats) - 1)
    base = spark.range(replicates * per_cell).select(
        rid.alias(unit),
        F.floor(rid / max(per_cell, 1)).cast("long").alias(REPLICATE),
        F.element_at(
            F.array(*[F.lit(v) for v in cats[:-1]]), (rid % (len(cats) - 1) + 1).cast("int")
        ).alias(m.column or ""),
        *[F.lit(v).alias(col) for col, v in middle.items()],
    )
    rows = 3 * s
    extra = spark.range(replicates * rows).select(
        (F.lit(EXTRA_UNIT) + F.floor(rid / rows)).cast("long").alias(unit),
        F.floor(rid / rows).cast("long").alias(REPLICATE),
        F.lit(cats[-1]).alias(m.column or ""),
        *[F.lit(v).alias(col) for col, v in middle.items()],
    )
    return base, base.unionByName(extra)


def audit_categories(
    spark: SparkSession, plan: TablePlan, unit: str, replicates: int, alpha: float
) -> list[MeasurementAudit]:
    """Each mode and top-k of the table: the first category it names, on neighbouring cells
    (:func:`_category_data`), against the first pick's epsilon in one cell; the control is the
    same mechanism at twice its epsilon."""
    plan = audit_plan(plan)
    out = []
    cats = categoricals(plan.table)
    for c in cats:
        claim = float(plan.cell_epsilon(c.metric)) / c.metric.k
        doubled = dataclasses.replace(plan, choice_epsilon=2 * plan.choice_epsilon)
        base, neighbour = _category_data(spark, plan, unit, c, replicates)
        column = c.count_column(0)  # the first pick's index, after the mechanism
        pairs = [
            (_draws(neighbour, p, unit, [column])[column], _draws(base, p, unit, [column])[column])
            for p in (plan, doubled)
        ]
        lower, caught = lower_bounds(pairs[0], pairs[1], alpha / (2 * len(cats)), 0.0)
        out.append(
            MeasurementAudit(
                plan.table.name.removeprefix("audit_"),
                c.metric.output_names[0],
                "exponential_mechanism",
                claim,
                0.0,
                lower,
                caught,
                replicates,
            )
        )
    return out


def levels_apart(plan: TablePlan) -> list[tuple[str, TablePlan]]:
    """A table with levels (or a suite) as one plain plan per level (or geographic level and
    query): that level's measurements, named as the table's own, with their noise. Each is the
    mechanism the level's cells are measured with (the release adds the finer cells up into
    the level's, one unit's rows landing in one cell per level as in the table; making the
    levels consistent afterwards is post-processing). ``[("", plan)]`` for a plain table."""
    if not plan.table.consistent:
        return [("", plan)]
    by_level: dict[str, list[NoiseParams]] = {}
    for m in plan.measurements:
        base, _, level = m.column.partition("@")
        by_level.setdefault(level, []).append(dataclasses.replace(m, column=base))
    table = dataclasses.replace(plan.table, levels=(), level_weights=(), geography=(), margins=())
    return [
        (level, dataclasses.replace(plan, table=table, measurements=tuple(ms)))
        for level, ms in by_level.items()
    ]


def audit_table(
    spark: SparkSession, plan: TablePlan, unit: str, replicates: int, alpha: float
) -> list[MeasurementAudit]:
    """Each measurement of the table audited, with its control (see the module docstring);
    a table with levels, level by level (:func:`levels_apart`)."""
    out = []
    parts = levels_apart(plan)
    for level, part in parts:
        for a in _audit_plain(spark, part, unit, replicates, alpha / len(parts)):
            name = f"{a.measurement}@{level}" if level else a.measurement
            out.append(dataclasses.replace(a, measurement=name))
    return out


def _audit_plain(
    spark: SparkSession, plan: TablePlan, unit: str, replicates: int, alpha: float
) -> list[MeasurementAudit]:
    plan = audit_plan(plan)
    base, neighbour = replicate_data(spark, plan, unit, replicates)
    columns = [_column(plan, m) for m in plan.measurements]
    samples: dict[str, Any] = {}
    for name, p in (("plan", plan), ("control", halved(plan))):
        samples[name] = (_draws(base, p, unit, columns), _draws(neighbour, p, unit, columns))
    out = []
    alpha_each = alpha / max(1, 2 * len(plan.measurements))
    for m, column in zip(plan.measurements, columns, strict=True):
        claim, delta = claimed_epsilon(m)
        pairs = [(samples[n][1][column], samples[n][0][column]) for n in ("plan", "control")]
        lower, caught = lower_bounds(pairs[0], pairs[1], alpha_each, delta)
        out.append(
            MeasurementAudit(
                plan.table.name.removeprefix("audit_"),
                m.column,
                m.mechanism,
                claim,
                delta,
                lower,
                caught,
                replicates,
            )
        )
    return out


Samples = tuple[np.ndarray, np.ndarray]
"""Draws of one output on a dataset with the extra person, and on the dataset without."""


def lower_bounds(
    plan: Samples, control: Samples, alpha: float, delta: float
) -> tuple[float, float]:
    """Empirical epsilon lower bounds (0 when nothing is certified) of the mechanism and of its
    control, each at level ``alpha``: thresholds from a fifth of the draws, the bound from the
    rest (see the module docstring)."""
    out = []
    for a, b in (plan, control):
        pilot = len(a) // PILOT
        cuts = cuts_between(a[:pilot], b[:pilot], CUTS)
        bound = epsilon_lower_bound(a[pilot:], b[pilot:], cuts, alpha, delta)
        out.append(bound if math.isfinite(bound) else 0.0)
    return out[0], out[1]
