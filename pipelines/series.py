"""A release series on Spark: each period's values and its totals to date, by the tree mechanism.

:mod:`dp_ops.continual` has the mathematics. Here a period's table is computed in four steps,
each a DataFrame -> DataFrame transformation; where their results are kept between periods is
:mod:`jobs.series`' business:

1. :func:`period_cells`: the exact bounded measures of one period over every public key
   (never released);
2. :func:`node_cells`: a node of the tree, the exact sum of its periods' cells (its children's
   exact cells :func:`summed`) plus noise of the node plan (:func:`plan_series`), keyed by the
   series' key, the node and the cell, so a recomputed task draws the same value;
3. :func:`node_estimate`: a node's estimate from its measurement and its children's estimates
   (the bottom-up pass of :mod:`dp_ops.continual`);
4. :func:`released_period`: the node of the period itself (the leaf) and the sum of the
   estimates of the nodes of the period's decomposition, finalized as the table's metrics and
   ``<metric>_to_date``.

Only public keys: the same cells every period, so a total to date is a sum over the same keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dp_ops.continual import (
    Family,
    Node,
    ending_at,
    node_sd_ratio,
    prefix_nodes,
    to_date_sd,
)
from dp_ops.errors import InternalError
from pipelines.noise import NoiseJob, add_noise
from pipelines.partitions import PublicKeys, join_public
from pipelines.periods import label, ordinal
from pipelines.plan import (
    ReleaseCost,
    ReleasePlan,
    TablePlan,
    plan_release,
    series_depth,
    series_factor,
)
from pipelines.postprocess import finalize
from pipelines.release import Secrets, all_measures, bounded_aggregates, cell_key_frame
from pipelines.report import declared_report, spent_report, table_report
from pipelines.spec import TO_DATE, ReleaseSpec, SeriesSpec


@dataclass(frozen=True)
class SeriesPlan:
    """How a series spends its budget: every node with the noise of ``nodes``."""

    series: SeriesSpec
    family: Family
    factor: int
    """``K`` (:func:`dp_ops.continual.budget_factor`): the node plan has the budget / K."""
    nodes: ReleasePlan
    """The plan of every node: a one-period release at the series' budget / ``factor``."""
    depth: int
    """The tree's levels (:func:`pipelines.plan.series_depth`)."""

    @property
    def cost(self) -> ReleaseCost:
        """What the whole series spends, charged once (:attr:`ReleasePlan.cost` of a series)."""
        return self.nodes.cost

    def tree(self) -> dict[str, Any]:
        """What every period of the series must plan alike, as JSON values: the tree (depth,
        horizon, ``max_periods``), ``K``, the noise family and the whole cost. The series was
        charged for this tree; a period planned with another would spend what was not charged
        (a new version of dprelease could choose another depth for the same spec)."""
        cost = self.cost
        return {
            "depth": self.depth,
            "horizon": self.series.horizon,
            "max_periods": self.series.max_periods,
            "factor": self.factor,
            "family": self.family,
            "cost": {
                "epsilon": None if cost.epsilon is None else str(cost.epsilon),
                "delta": str(cost.delta),
                "rho": None if cost.rho is None else str(cost.rho),
            },
            "tables": [
                {
                    "name": t.table.name,
                    "measurements": [
                        [m.column, m.mechanism, str(m.parameter)] for m in t.measurements
                    ],
                }
                for t in self.nodes.tables
            ],
        }


def plan_series(spec: ReleaseSpec, nodes: ReleasePlan | None = None) -> SeriesPlan:
    """The plan of a series spec (:func:`pipelines.spec.parse_spec` checked it); ``nodes``:
    its :func:`plan_release`, when the caller has it already."""
    if spec.series is None:
        raise InternalError("plan_series of a spec without a series")
    family, k = series_factor(spec)
    nodes = nodes if nodes is not None else plan_release(spec)
    return SeriesPlan(spec.series, family, k, nodes, series_depth(spec))


def period_cells(
    df: DataFrame, tplan: TablePlan, unit: str, secrets: Secrets, keys: PublicKeys | None
) -> DataFrame:
    """Exact bounded measures of one period, ``(dims..., measures...)``, one row per public key
    (zero where the period has none): not private, never released."""
    dims = list(tplan.table.dimensions)
    cells = bounded_aggregates(df, tplan, unit, secrets)
    frame = cell_key_frame(keys.frame, dims, secrets, tplan.table.name) if keys else None
    return join_public(cells, frame, dims, all_measures(tplan))


def node_jobs(tplan: TablePlan, node: Node) -> list[NoiseJob]:
    """The noise of one node: each measurement of the node plan, streams labelled by table,
    column and node (a node's noise is independent of every other node's)."""
    name = tplan.table.name
    return [NoiseJob(m, f"{name}/{m.column}@{node.name}") for m in tplan.measurements]


def summed(
    frames: Sequence[DataFrame],
    dims: Sequence[str],
    measures: Sequence[str],
    weights: Sequence[float] | None = None,
    whole: bool = True,
) -> DataFrame:
    """The cell-by-cell sum of tables ``(dims..., measures...)`` over the same keys, each
    times its weight (default 1); ``whole``: rounded to whole numbers (long), else double."""
    if not frames:
        raise InternalError("a sum of no tables")
    weights = weights if weights is not None else [1.0] * len(frames)
    parts = [
        f.select(*dims, *[(F.col(m).cast("double") * F.lit(w)).alias(m) for m in measures])
        if w != 1.0 or not whole
        else f
        for f, w in zip(frames, weights, strict=True)
    ]
    union = parts[0]
    for f in parts[1:]:
        union = union.unionByName(f)
    if whole:
        totals = [F.round(F.sum(m)).cast("long").alias(m) for m in measures]
    else:
        totals = [F.sum(m).cast("double").alias(m) for m in measures]
    if not dims:
        return union.agg(*totals)
    return union.groupBy(*dims).agg(*totals)


def node_cells(exact: DataFrame, tplan: TablePlan, node: Node, key: bytes) -> DataFrame:
    """A node's released measurement: its ``exact`` cells (the sum of its periods') plus noise
    keyed by ``key``, the node and each cell. Runs Spark now (:func:`pipelines.noise.add_noise`)."""
    return add_noise(exact, list(tplan.table.dimensions), node_jobs(tplan, node), key)


def node_estimate(
    measured: DataFrame, children: Sequence[DataFrame], tplan: TablePlan, weight: float
) -> DataFrame:
    """A node's estimate (double): its measurement times ``weight`` plus its ``children``'s
    estimates times ``1 - weight`` (:func:`dp_ops.continual.level_weights`); a leaf's is its
    measurement. Post-processing of released nodes."""
    dims = list(tplan.table.dimensions)
    frames, weights = [measured, *children], [weight] + [1 - weight] * len(children)
    return summed(frames, dims, all_measures(tplan), weights, whole=False)


def released_period(
    leaf: DataFrame, to_date_nodes: Sequence[DataFrame], tplan: TablePlan, nonnegative: bool
) -> DataFrame:
    """The released table of a period: ``(dims..., metrics..., metrics_to_date...)`` from its
    leaf node and the estimates of the nodes of its decomposition, rounded to whole grid steps
    (post-processing only)."""
    dims = list(tplan.table.dimensions)
    period = finalize(leaf, tplan, nonnegative)
    total = finalize(summed(to_date_nodes, dims, all_measures(tplan)), tplan, nonnegative)
    total = total.select(
        *dims, *[F.col(m.output_name).alias(m.output_name + TO_DATE) for m in tplan.table.metrics]
    )
    if not dims:
        return period.crossJoin(total)
    return period.join(total, on=dims, how="inner")


def series_report(splan: SeriesPlan, t: int, confidence: float) -> dict[str, Any]:
    """The manifest's ``series`` entry for period ``t``: the mechanism, the nodes measured and
    summed, and per table and metric the noise of the period's value and of the total to date,
    beside the alternative of summing one release per period."""
    s = splan.series
    tables = []
    depth = splan.depth
    ratio = node_sd_ratio(s.horizon, s.max_periods, splan.family, depth)
    for tplan in splan.nodes.tables:
        metrics = []
        for entry in table_report(tplan, confidence)["metrics"]:
            sd = entry.get("standard_deviation")
            row: dict[str, Any] = {"name": entry["name"], "kind": entry["kind"]}
            if sd is None:
                row["note"] = "a ratio of noisy totals: no closed-form standard deviation"
            else:
                row["period_sd"] = sd
                row["to_date_sd"] = to_date_sd(t, s.horizon, sd, depth)
                row["summed_periods_sd"] = to_date_sd(t, s.horizon, sd / ratio, 1)
            metrics.append(row)
        tables.append({"name": tplan.table.name, "metrics": metrics})
    return {
        "name": s.name,
        "period": s.period,
        "start": s.start,
        "end": label(ordinal(s.start, s.period) + s.horizon - 1, s.period),
        "position": t,
        "horizon": s.horizon,
        "max_periods_per_unit": s.max_periods,
        "mechanism": (
            f"binary tree (continual counting) of {depth} level(s): each node, 2^j periods "
            f"ending at a period, measured once with {splan.family} noise at the series budget "
            f"/ {splan.factor}; totals to date from the nodes' bottom-up estimates"
        ),
        "levels": depth,
        "nodes_measured": [n.name for n in ending_at(t, s.horizon, depth)],
        "to_date_nodes": [n.name for n in prefix_nodes(t, s.horizon, depth)],
        "tables": tables,
        "note": (
            "period_sd: noise of a period's value; to_date_sd: of the total to date; "
            "summed_periods_sd: what summing one release per period, at the same series "
            "budget, would have had. Totals to date are sums of the nodes' estimates (each "
            "from the node and the estimates of its children, by inverse variance): "
            "post-processing, not spending."
        ),
    }


def series_budget(spec: ReleaseSpec, splan: SeriesPlan) -> dict[str, Any]:
    """The manifest's ``budget`` for a period of a series: the series' budget and guarantee."""
    return {
        "declared": declared_report(spec.budget),
        "spent": spent_report(
            splan.cost,
            "the whole series' guarantee, over all its periods, charged to the ledger once at "
            "its first period; a period spends nothing more",
        ),
        "composition": (
            f"binary tree over {splan.series.horizon} periods: each of its {splan.depth} "
            f"levels' nodes measured once at the series budget / {splan.factor} "
            "(dp_ops.continual)"
        ),
    }
