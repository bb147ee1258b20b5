"""Post-processing of noisy measurements into the released metric columns (costs no budget).

Input: ``(dims..., count, privacy_unit_count, s_<col>...)`` holding noisy integers.
Output: ``(dims..., <metric>...)`` in the order the spec lists the metrics:

* ``count`` and ``privacy_unit_count``: the noisy integer, clamped at zero if asked;
* ``sum_<col>``: (noisy centered grid sum + center * noisy count) times the granularity;
* ``mean_<col>``: (center + noisy centered sum / max(noisy count, 1)) times the granularity,
  clamped to the column's bounds;
* ``proportion_<col>`` with ``_se``, ``_low``, ``_high``: the share of 1s as a mean, turned
  into the randomized-response design's unbiased estimate (unclamped), its standard error and
  normal interval (:mod:`dp_ops.randomized_response`).

Sums and means use the noisy count before any clamping at zero.

Two implementations of the same arithmetic: :func:`finalize` in Spark, and :func:`finalize_table`
for tables noised on the driver (numpy over Arrow, no Spark step). Both perform the same IEEE
double operations in the same order, so they release the same bits; the tests compare them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.randomized_response import Design, proportion_estimates
from pipelines import sql_text as sql
from pipelines.aggregation import COUNT, UNITS
from pipelines.plan import Categorical, Histogram, TablePlan, categoricals, histograms
from pipelines.spec import CATEGORY_KINDS, SPREAD_KINDS, MetricSpec


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


def _proportion_parameters(m: MetricSpec, plan: TablePlan) -> tuple[Design, float, float, float]:
    """(design, sum noise variance, count noise variance, z) of a proportion's estimate."""
    d = m.design
    design = Design(float(d.yes_offset), float(d.p_truth)) if d is not None else Design()
    v = next(x for x in plan.values if x.column == m.column)
    sum_sd, count_sd = plan.noise_for(v.sum_name).sd()[0], plan.noise_for(COUNT).sd()[0]
    z = NormalDist().inv_cdf(0.5 + m.confidence / 2)
    return design, sum_sd * sum_sd, count_sd * count_sd, z


def _proportion(m: MetricSpec, plan: TablePlan) -> list[Column]:
    """A proportion's estimate, standard error and interval
    (:func:`dp_ops.randomized_response.proportion_estimates`, as Spark SQL)."""
    design, sum_var, count_var, z = _proportion_parameters(m, plan)
    v = next(x for x in plan.values if x.column == m.column)
    v1, v0 = design.variances
    n = f"CAST(greatest({sql.name(COUNT)}, 1) AS DOUBLE)"
    centered = f"CAST({sql.name(v.sum_name)} AS DOUBLE)"
    share = f"(({sql.double(v.center)} + {centered} / {n}) * {sql.double(v.granularity)})"
    est = f"(({share} - {sql.double(design.a)}) / {sql.double(design.b)})"
    pi = f"least(greatest({est}, 0.0D), 1.0D)"
    lam = f"least(greatest({share}, 0.0D), 1.0D)"
    v_design = f"(({pi} * {sql.double(v1)} + (1.0D - {pi}) * {sql.double(v0)}) / {n})"
    v_noise = f"(({sql.double(sum_var)} + {lam} * {lam} * {sql.double(count_var)}) / ({n} * {n}))"
    se = f"(sqrt({v_design} + {v_noise}) / {sql.double(design.b)})"
    names = m.output_names
    return [
        sql.expr(est, names[0]),
        sql.expr(se, names[1]),
        sql.expr(f"{est} - {sql.double(z)} * {se}", names[2]),
        sql.expr(f"{est} + {sql.double(z)} * {se}", names[3]),
    ]


def _table_proportion(table: pa.Table, m: MetricSpec, plan: TablePlan) -> list[pa.Array]:
    """:func:`_proportion` over an Arrow table."""
    design, sum_var, count_var, z = _proportion_parameters(m, plan)
    v = next(x for x in plan.values if x.column == m.column)
    n = np.maximum(_longs(table, COUNT), 1).astype(np.float64)
    centered = _longs(table, v.sum_name).astype(np.float64)
    share = (float(v.center) + centered / n) * v.granularity
    values = proportion_estimates(share, n, design, sum_var, count_var, z)
    return [pa.array(x, pa.float64()) for x in values]


def _categories(c: Categorical) -> list[Column]:
    """A mode's or top-k's named categories, from the indices the mechanism wrote (as text)."""
    names = ", ".join(sql.string(str(v)) for v in c.metric.categories)
    return [
        sql.expr(f"element_at(array({names}), CAST({sql.name(c.count_column(r))} AS INT) + 1)", n)
        for r, n in enumerate(c.metric.output_names)
    ]


def _table_categories(table: pa.Table, c: Categorical) -> list[pa.Array]:
    """:func:`_categories` over an Arrow table."""
    names = np.array([str(v) for v in c.metric.categories], dtype=object)
    return [
        pa.array(names[_longs(table, c.count_column(r))].tolist(), pa.string())
        for r in range(len(c.metric.output_names))
    ]


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
    cats = {c.metric: c for c in categoricals(plan.table)}
    metrics: list[Column] = []
    for m in plan.table.metrics:
        if m.kind in SPREAD_KINDS:
            metrics.append(sql.expr(_spread(m, plan), m.output_name))
        elif m.kind == "histogram":
            metrics.extend(_histogram(hist[m], nonnegative))
        elif m.kind == "quantiles":
            metrics.extend(_quantiles(hist[m]))
        elif m.kind == "proportion":
            metrics.extend(_proportion(m, plan))
        elif m.kind in CATEGORY_KINDS:
            metrics.extend(_categories(cats[m]))
        else:
            metrics.append(sql.expr(_metric(m, plan, nonnegative), m.output_name))
    return noisy.select(*dims, *metrics)


def _longs(table: pa.Table, column: str) -> npt.NDArray[np.int64]:
    values: npt.NDArray[np.int64] = table.column(column).to_numpy().astype(np.int64)
    return values


def _table_metric(table: pa.Table, m: MetricSpec, plan: TablePlan, nonnegative: bool) -> pa.Array:
    """:func:`_metric` over an Arrow table."""
    if m.kind in ("count", "privacy_unit_count"):
        c = _longs(table, COUNT if m.kind == "count" else UNITS)
        return pa.array(np.maximum(c, 0) if nonnegative else c, pa.int64())
    v = next(x for x in plan.values if x.column == m.column)
    centered = _longs(table, v.sum_name).astype(np.float64)
    if m.kind == "sum":
        if v.center == 0:
            return pa.array(centered * v.granularity, pa.float64())
        count = _longs(table, COUNT).astype(np.float64)
        return pa.array((centered + float(v.center) * count) * v.granularity, pa.float64())
    count = np.maximum(_longs(table, COUNT), 1).astype(np.float64)
    mean = (float(v.center) + centered / count) * v.granularity
    return pa.array(np.minimum(np.maximum(mean, v.lower), v.upper), pa.float64())


def _table_spread(table: pa.Table, m: MetricSpec, plan: TablePlan) -> pa.Array:
    """:func:`_spread` over an Arrow table."""
    sq = plan.squares_of(m.column or "")
    v = sq.value
    n = np.maximum(_longs(table, COUNT), 1).astype(np.float64)
    mean = _longs(table, v.sum_name).astype(np.float64) / n
    second = _longs(table, sq.measure).astype(np.float64) * sq.step / n
    spread = np.maximum(second - mean * mean, 0.0) * (v.granularity**2)
    variance = np.minimum(spread, ((v.upper - v.lower) / 2) ** 2)
    return pa.array(np.sqrt(variance) if m.kind == "stddev" else variance, pa.float64())


def _bin_counts(table: pa.Table, h: Histogram) -> npt.NDArray[np.int64]:
    """``(cells, bins)``: the noisy counts of a histogram's bins."""
    stacked: npt.NDArray[np.int64] = np.stack(
        [_longs(table, h.count_column(i)) for i in range(h.bins)], axis=1
    )
    return stacked


def _table_quantiles(table: pa.Table, h: Histogram) -> list[pa.Array]:
    """:func:`_quantiles` over an Arrow table."""
    edges = h.metric.edges
    counts = np.maximum(_bin_counts(table, h), 0).astype(np.float64)
    cum = np.cumsum(counts, axis=1)  # sequential, as Spark's running totals
    total = cum[:, -1]
    lows = np.array([float(e) for e in edges[:-1]])
    widths = np.array([float(b - a) for a, b in itertools.pairwise(edges)])
    rows = np.arange(table.num_rows)
    out = []
    for p in h.metric.probabilities:
        target = total * p
        reached = cum >= target[:, None]
        idx = np.where(reached.any(axis=1), reached.argmax(axis=1), 0)  # 0-based bin
        before = np.where(idx > 0, cum[rows, np.maximum(idx - 1, 0)], 0.0)
        in_bin = counts[rows, idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(in_bin > 0, (target - before) / in_bin, 0.0)
        share = np.minimum(np.maximum(frac, 0.0), 1.0)
        value = lows[idx] + share * widths[idx]
        out.append(pa.array(np.where(total > 0, value, (edges[0] + edges[-1]) / 2), pa.float64()))
    return out


def finalize_table(
    noisy: pa.Table, plan: TablePlan, nonnegative: bool
) -> tuple[pa.Table, list[T.StructField]]:
    """:func:`finalize` on the driver: the released metric columns of a noisy Arrow table (no
    nulls), with the dimensions, and the Spark fields of the metrics."""
    dims = list(plan.table.dimensions)
    hist = {h.metric: h for h in histograms(plan.table)}
    cats = {c.metric: c for c in categoricals(plan.table)}
    columns: dict[str, pa.Array | pa.ChunkedArray] = {d: noisy.column(d) for d in dims}
    fields: list[T.StructField] = []

    def add(name: str, values: pa.Array) -> None:
        columns[name] = values
        kind: T.DataType = T.DoubleType()
        if pa.types.is_integer(values.type):
            kind = T.LongType()
        elif pa.types.is_string(values.type):
            kind = T.StringType()
        fields.append(T.StructField(name, kind))

    for m in plan.table.metrics:
        if m.kind in SPREAD_KINDS:
            add(m.output_name, _table_spread(noisy, m, plan))
        elif m.kind == "histogram":
            counts = _bin_counts(noisy, hist[m])
            counts = np.maximum(counts, 0) if nonnegative else counts
            for i, name in enumerate(m.output_names):
                add(name, pa.array(counts[:, i], pa.int64()))
        elif m.kind == "quantiles":
            for name, values in zip(m.output_names, _table_quantiles(noisy, hist[m]), strict=True):
                add(name, values)
        elif m.kind == "proportion":
            for name, values in zip(m.output_names, _table_proportion(noisy, m, plan), strict=True):
                add(name, values)
        elif m.kind in CATEGORY_KINDS:
            for name, values in zip(m.output_names, _table_categories(noisy, cats[m]), strict=True):
                add(name, values)
        else:
            add(m.output_name, _table_metric(noisy, m, plan, nonnegative))
    return pa.table(columns), fields
