"""Post-processing of noisy measurements into the released metric columns (costs no budget).

Input: ``(dims..., count, privacy_unit_count, s_<col>...)`` holding noisy integers.
Output: ``(dims..., <metric>...)`` in the order the spec lists the metrics:

* ``count`` and ``privacy_unit_count``: the noisy integer, clamped at zero if asked;
* ``sum_<col>``: (noisy centered grid sum + center * noisy count) times the granularity;
* ``mean_<col>``: (center + noisy centered sum / max(noisy count, 1)) times the granularity,
  clamped to the column's bounds.

Sums and means use the noisy count before any clamping at zero.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines import sql_text as sql
from pipelines.aggregation import COUNT, UNITS
from pipelines.plan import Histogram, TablePlan, histograms
from pipelines.spec import SPREAD_KINDS, MetricSpec


def _metric(m: MetricSpec, plan: TablePlan, nonnegative: bool) -> str:
    if m.kind in ("count", "privacy_unit_count"):
        c = sql.name(COUNT if m.kind == "count" else UNITS)
        return f"CAST(greatest({c}, 0) AS BIGINT)" if nonnegative else f"CAST({c} AS BIGINT)"
    v = next(x for x in plan.values if x.column == m.column)
    centered = f"CAST({sql.name(v.sum_name)} AS DOUBLE)"
    granularity = sql.double(v.granularity)
    if m.kind == "sum":
        if v.center == 0:
            return f"{centered} * {granularity}"
        count = f"CAST({sql.name(COUNT)} AS DOUBLE)"
        return f"({centered} + {sql.double(v.center)} * {count}) * {granularity}"
    count = f"CAST(greatest({sql.name(COUNT)}, 1) AS DOUBLE)"
    mean = f"({sql.double(v.center)} + {centered} / {count}) * {granularity}"
    return f"least(greatest({mean}, {sql.double(v.lower)}), {sql.double(v.upper)})"


def _histogram(h: Histogram, nonnegative: bool) -> list[Column]:
    bins = [sql.name(h.count_column(i)) for i in range(h.bins)]
    if nonnegative:
        bins = [f"greatest({b}, 0)" for b in bins]
    names = h.metric.output_names
    return [sql.expr(f"CAST({b} AS BIGINT)", n) for b, n in zip(bins, names, strict=True)]


def _reached(target: Column) -> Callable[[Column], Column]:
    return lambda c: c >= target


def _quantiles(h: Histogram) -> list[Column]:
    """Each quantile read from the noisy histogram (bins clamped at zero): the point where the
    cumulative count reaches ``p`` times the total, by linear interpolation inside its bin. A
    cell with no count left gets the middle of the range."""
    edges = h.metric.edges
    clamped = [F.greatest(F.col(h.count_column(i)), F.lit(0)).cast("double") for i in range(h.bins)]
    counts = F.array(*clamped)
    start = F.array().cast("array<double>")
    cum = F.aggregate(  # running totals: [c0, c0 + c1, ...]
        counts,
        start,
        lambda acc, x: F.concat(
            acc, F.array(F.coalesce(F.try_element_at(acc, F.lit(-1)), F.lit(0.0)) + x)
        ),
    )
    total = F.element_at(cum, h.bins)
    lows = F.array(*[F.lit(float(e)) for e in edges[:-1]])
    widths = F.array(*[F.lit(float(b - a)) for a, b in itertools.pairwise(edges)])
    middle = F.lit((edges[0] + edges[-1]) / 2)
    out = []
    for p, name in zip(h.metric.probabilities, h.metric.output_names, strict=True):
        target = total * F.lit(p)
        idx = F.array_position(F.transform(cum, _reached(target)), True).cast("int")  # 1-based
        before = F.when(idx > 1, F.element_at(cum, F.greatest(idx - 1, F.lit(1)))).otherwise(0.0)
        in_bin = F.element_at(counts, idx)
        frac = F.when(in_bin > 0, (target - before) / in_bin).otherwise(F.lit(0.0))
        share = F.least(F.greatest(frac, F.lit(0.0)), F.lit(1.0))
        value = F.element_at(lows, idx) + share * F.element_at(widths, idx)
        out.append(F.when(total > 0, value).otherwise(middle).cast("double").alias(name))
    return out


def _spread(m: MetricSpec, plan: TablePlan) -> str:
    """Variance (or standard deviation) from the noisy count, centered sum and squares."""
    sq = plan.squares_of(m.column or "")
    v = sq.value
    n = f"CAST(greatest({sql.name(COUNT)}, 1) AS DOUBLE)"
    mean = f"(CAST({sql.name(v.sum_name)} AS DOUBLE) / {n})"
    second = f"CAST({sql.name(sq.measure)} AS DOUBLE) * {sql.double(sq.step)} / {n}"
    top = sql.double(((v.upper - v.lower) / 2) ** 2)
    spread = f"greatest({second} - {mean} * {mean}, 0.0D) * {sql.double(v.granularity**2)}"
    variance = f"least({spread}, {top})"
    return f"sqrt({variance})" if m.kind == "stddev" else variance


def finalize(noisy: DataFrame, plan: TablePlan, nonnegative: bool) -> DataFrame:
    dims = list(plan.table.dimensions)
    hist = {h.metric: h for h in histograms(plan.table)}
    metrics: list[Column] = []
    for m in plan.table.metrics:
        if m.kind in SPREAD_KINDS:
            metrics.append(sql.expr(_spread(m, plan), m.output_name))
        elif m.kind == "histogram":
            metrics.extend(_histogram(hist[m], nonnegative))
        elif m.kind == "quantiles":
            metrics.extend(_quantiles(hist[m]))
        else:
            metrics.append(sql.expr(_metric(m, plan, nonnegative), m.output_name))
    return noisy.select(*dims, *metrics)
