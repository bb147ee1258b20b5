"""The audit of private partition selection, for ``dprelease audit``.

Selection keeps a cell by its number of distinct units (after bounding, each unit adds at most
one to a cell's count, which the measurement audit's bound-breaking person checks). The audit
gives the engine ``replicates`` cells that each hold ``n`` units, and as many that each hold
``n + 1``, and runs its noise and selection on them (:func:`pipelines.release.noise_and_select`,
the selection's own draw and, for ``post_aggregation``, the released unit count's, keyed per
cell as in a release): whether each cell is kept is one draw of the mechanism. ``n`` is where
the plan's keep probabilities move most for the draws there are: a design choice from public
numbers, not a claim.

The claim per cell: the selection's epsilon over the cells one unit can reach (``laplace``,
``truncated_geometric``), the Gaussian's zCDP stated at a delta, or the released unit count's
(``post_aggregation``), with the selection's delta for one cell added. The control is the table
planned at twice its epsilon, audited against the same claim.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dp_ops.selection import adjusted_delta
from pipelines.aggregation import UNITS
from pipelines.audit import REPLICATE, MeasurementAudit, claimed_epsilon, lower_bounds
from pipelines.plan import TablePlan, plan_table
from pipelines.release import Secrets, all_measures, noise_and_select, noise_jobs, selection_jobs
from pipelines.spark_compat import to_arrow

MAX_UNITS = 100_000
"""The largest cell size the design point is searched up to."""


def selection_claim(plan: TablePlan) -> tuple[float, float]:
    """(epsilon, delta) the selection claims for one cell."""
    sel = plan.selection
    if sel is None:
        raise ValueError("the table has no private selection")
    l0 = plan.table.bounds.max_partitions
    delta = adjusted_delta(float(sel.delta), l0)
    if sel.table is not None:  # truncated geometric
        return float(sel.epsilon) / l0, delta
    noise = sel.noise or next(m for m in plan.measurements if m.column == sel.carrier)
    eps, noise_delta = claimed_epsilon(noise)
    return eps, delta + noise_delta


def design_point(plan: TablePlan, draws: int) -> int:
    """The cell size ``n`` (against ``n + 1``) where the plan's keep probabilities differ most,
    less five standard errors of the log ratio at ``draws`` draws."""
    sel = plan.selection
    if sel is None:
        raise ValueError("the table has no private selection")
    noise = plan.units_noise
    best, best_n = -math.inf, sel.pre_threshold
    top = min(MAX_UNITS, sel.units_for_probability(0.999, noise))
    p0 = sel.keep_probability(sel.pre_threshold, noise)
    for n in range(sel.pre_threshold, top + 1):
        p1 = sel.keep_probability(n + 1, noise)
        for x, y in ((p1, p0), (1 - p0, 1 - p1)):
            if x > 0 and y > 0:
                spread = 5 * math.sqrt((1 - x) / (draws * x) + (1 - y) / (draws * y))
                if math.log(x / y) - spread > best:
                    best, best_n = math.log(x / y) - spread, n
        p0 = p1
    return best_n


def _kept(spark: SparkSession, plan: TablePlan, n: int, replicates: int) -> np.ndarray:
    """Whether each of ``replicates`` cells of ``n`` units is kept: 1.0 or 0.0."""
    measures = all_measures(plan)
    cells = spark.range(replicates).select(
        F.col("id").alias(REPLICATE),
        *[F.lit(n).cast("long").alias(m) for m in measures if m != UNITS],
        F.lit(n).cast("long").alias(UNITS),
    )
    jobs = noise_jobs(plan) + selection_jobs(plan)
    kept = noise_and_select(
        cells, [REPLICATE], measures, plan.selection, jobs, Secrets.new().key
    ).select(REPLICATE)
    ids = np.asarray(to_arrow(kept).column(REPLICATE).to_pylist(), dtype=np.int64)  # synthetic
    out = np.zeros(replicates)
    out[ids] = 1.0
    return out


def audit_selection(
    spark: SparkSession, plan: TablePlan, replicates: int, alpha: float
) -> list[MeasurementAudit]:
    """The table's private selection audited with its control (module docstring); [] for a
    table with public partitions."""
    if plan.selection is None:
        return []
    claim, delta = selection_claim(plan)
    doubled = plan_table(
        plan.table, 2 * plan.epsilon, plan.delta, plan.family, plan.selection.strategy
    )
    samples = []
    for p in (plan, doubled):
        p = dataclasses.replace(p, table=dataclasses.replace(p.table, dimensions=(REPLICATE,)))
        n = design_point(p, replicates)
        samples.append((_kept(spark, p, n + 1, replicates), _kept(spark, p, n, replicates)))
    lower, control = lower_bounds(samples[0], samples[1], alpha / 2, delta)
    return [
        MeasurementAudit(
            plan.table.name,
            "selection",
            f"{plan.selection.strategy} selection",
            claim,
            delta,
            lower,
            control,
            replicates,
        )
    ]
