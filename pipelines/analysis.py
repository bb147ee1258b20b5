"""A non-private analysis of the input for the operator choosing bounds (``dprelease analyze``).

NOT PRIVACY-PROTECTED: every figure here is an exact statistic of the microdata. It is written
only to the output's owner-only private directory and must never be published. Bounds chosen
from it depend on the data: a release that uses them spends privacy this module does not
account for (use ``auto`` bounds, or bounds from public knowledge, for a formal guarantee).

Per table it measures what the bounds do to the data and what they cost in noise:

* contributions: how many cells each privacy unit has rows in (what ``max_partitions``, L0,
  cuts), and how many rows each unit has per cell (what ``max_rows_per_partition``, Linf, cuts),
  as histograms, with the share of units and rows beyond the spec's bounds;
* each clamped column's distribution against its ``lower`` and ``upper``;
* for candidate (L0, Linf) pairs and candidate clamps: the share of rows and of each metric's
  total the bounds drop, in expectation over the release's uniform random choice (a unit in k
  cells keeps each with probability min(1, L0 / k); of n rows in a cell it keeps min(n, Linf),
  each row with the same chance), and the expected error of a cell, the root of the mean over
  the cells with data of (bias^2 + noise variance), the noise from the plan of the spec with
  those bounds;
* for private selection, the expected number of cells released under each L0;
* a recommendation: the (L0, Linf) of least expected error of the table's counts (of its first
  sum when it counts nothing), then per column the clamp of least expected error of its sum at
  those contribution bounds.

Spark does one pass over the input for the columns' quantiles, one aggregation per (unit, cell),
kept, and a few small aggregations of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipelines.auto_bounds import l0_candidates
from pipelines.persistence import keep
from pipelines.plan import TablePlan, declared_cell_count, plan_release, value_columns
from pipelines.preview import value_bounds, with_bounds
from pipelines.spark_compat import to_arrow
from pipelines.spec import HISTOGRAM_KINDS, PrivatePartitions, ReleaseSpec, TableSpec

NOT_PRIVATE = (
    "NOT privacy-protected: exact statistics of the input, for the operator choosing bounds. "
    "Never publish this file. Bounds taken from it depend on the data: the release's guarantee "
    "does not cover that choice (auto bounds or public knowledge do)."
)

CONTRIBUTION_CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
"""L0 and Linf candidates, up to the largest contribution seen (and the spec's own)."""

UPPER_QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
LOWER_QUANTILES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5)
DISTRIBUTION = (0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
ACCURACY = 10_000
"""percentile_approx's accuracy: a quantile's rank is within 1/ACCURACY of the rows."""

UNIT, N, K = "_unit", "_n", "_k"


@dataclass(frozen=True)
class _Column:
    name: str
    lower: float
    upper: float
    clamped: bool
    """Sum-like metrics clamp it; histograms and quantiles read it through their edges."""


def _columns(table: TableSpec) -> list[_Column]:
    out = [_Column(c, lo, hi, True) for c, (lo, hi) in value_bounds(table).items()]
    for m in table.metrics:
        if m.kind in HISTOGRAM_KINDS and m.column and all(c.name != m.column for c in out):
            out.append(_Column(m.column, m.edges[0], m.edges[-1], False))
    return out


def _clamp(c: str, lower: float, upper: float) -> Column:
    return F.least(F.greatest(F.col(c).cast("double"), F.lit(lower)), F.lit(upper))


def _candidates(spec_value: int, largest: int) -> list[int]:
    """The spec's bound, the candidates up to the largest contribution seen, and that largest
    (when it is within the candidates' range)."""
    seen = {c for c in CONTRIBUTION_CANDIDATES if c <= max(largest, 1)}
    if largest <= CONTRIBUTION_CANDIDATES[-1]:
        seen.add(largest)
    return sorted({spec_value, *seen})


def _distributions(df: DataFrame, columns: Sequence[_Column]) -> dict[str, dict[str, Any]]:
    """Per column: quantiles, and the shares of rows below ``lower`` and above ``upper``."""
    if not columns:
        return {}
    aggs = []
    for c in columns:
        v = F.col(c.name).cast("double")
        probs = sorted({*DISTRIBUTION, *UPPER_QUANTILES, *LOWER_QUANTILES})
        aggs += [
            F.percentile_approx(v, probs, ACCURACY).alias(f"q_{c.name}"),
            F.avg((v < c.lower).cast("double")).alias(f"below_{c.name}"),
            F.avg((v > c.upper).cast("double")).alias(f"above_{c.name}"),
        ]
    row = df.agg(*aggs).first()
    if row is None:
        return {}
    out = {}
    probs = sorted({*DISTRIBUTION, *UPPER_QUANTILES, *LOWER_QUANTILES})
    for c in columns:
        quantiles = dict(zip(probs, [float(x) for x in row[f"q_{c.name}"]], strict=True))
        out[c.name] = {
            "bounds": [c.lower, c.upper],
            "quantiles": {f"{p:g}": quantiles[p] for p in DISTRIBUTION},
            "share_below_lower": float(row[f"below_{c.name}"]),
            "share_above_upper": float(row[f"above_{c.name}"]),
            "_all": quantiles,
        }
    return out


def _clamp_candidates(c: _Column, quantiles: dict[float, float]) -> list[tuple[float, float]]:
    """(lower, upper) candidates: the spec's, each upper quantile with the spec's lower, each
    lower quantile with the spec's upper (lower ones only when values go below zero)."""
    pairs = {(c.lower, c.upper)}
    pairs |= {(c.lower, quantiles[p]) for p in (*UPPER_QUANTILES, 1.0) if quantiles[p] > c.lower}
    if quantiles[0.0] < 0:
        lows = (0.0, *LOWER_QUANTILES)
        pairs |= {(quantiles[p], c.upper) for p in lows if quantiles[p] < c.upper}
    return sorted(pairs)


def _histograms(pairs: DataFrame) -> tuple[list[list[int]], list[list[int]]]:
    """([cells, units in that many cells], [rows, (unit, cell) pairs with that many rows]), in
    one small aggregation: a unit in k cells is k pairs with that k."""
    joint = pairs.groupBy(K, N).count().collect()  # safe: operator-only analysis, not logged
    units: dict[int, int] = {}
    rows: dict[int, int] = {}
    for r in joint:
        k, n, c = int(r[K]), int(r[N]), int(r["count"])
        units[k] = units.get(k, 0) + c
        rows[n] = rows.get(n, 0) + c
    return (
        [[k, units[k] // k] for k in sorted(units)],  # pairs with k, over k: whole units
        [[n, rows[n]] for n in sorted(rows)],
    )


def _weight(a: int, r: int | None = None) -> Column:
    """Expected share of a (unit, cell)'s rows kept under L0 = a (and Linf = r)."""
    cell = F.least(F.lit(1.0), F.lit(float(a)) / F.col(K))
    if r is None:
        return cell
    return cell * F.least(F.col(N), F.lit(r)) / F.col(N)


def _sds(spec: ReleaseSpec, i: int, **bounds: Any) -> tuple[TablePlan, dict[str, float]]:
    """The table's plan with these bounds and each measurement's noise sd in released units."""
    t = plan_release(with_bounds(spec, i, **bounds)).tables[i]
    return t, {m.column: m.sd()[0] * m.unit for m in t.measurements}


def _aimed_at(
    spec: ReleaseSpec, i: int, columns: list[_Column], dist: dict[str, dict[str, Any]]
) -> tuple[ReleaseSpec, list[_Column]]:
    """For bounds the release chooses itself (``auto``): the spec with the rows' quantile the
    release aims at (``auto_quantile``, the nearest one measured) in their place, so the
    analysis compares candidates with what the release will about do."""
    table = spec.tables[i]
    probs = sorted(dist[columns[0].name]["_all"]) if columns else []
    aim = min(probs, key=lambda p: abs(p - table.auto_quantile)) if probs else 0.95
    low = min(probs, key=lambda p: abs(p - (1 - table.auto_quantile))) if probs else 0.05
    clamps: dict[str, tuple[float, float]] = {}
    out = []
    for c in columns:
        sides = next((m.auto for m in table.metrics if m.column == c.name and m.auto), ())
        if not sides or not c.clamped:
            out.append(c)
            continue
        q = dist[c.name]["_all"]
        lower = q[low] if "lower" in sides else c.lower
        upper = q[aim] if "upper" in sides else c.upper
        if not lower < upper:
            upper = lower + max(abs(lower), 1.0)
        clamps[c.name] = (lower, upper)
        dist[c.name]["bounds"] = [lower, upper]
        chosen = [s for s in sides if s != "granularity"]
        dist[c.name]["auto"] = f"{'/'.join(chosen)}: the rows' quantile the release aims at"
        for side, share in (("lower", "share_below_lower"), ("upper", "share_above_upper")):
            if side in chosen:
                dist[c.name][share] = None  # measured against a placeholder: meaningless
        out.append(_Column(c.name, lower, upper, True))
    return with_bounds(spec, i, clamps=clamps), out


def _rmse(sq_bias: float, cells: int, sd: float) -> float:
    return math.sqrt(sq_bias / max(cells, 1) + sd * sd)


def analyze_table(df: DataFrame, spec: ReleaseSpec, i: int) -> dict[str, Any]:
    """The analysis of table ``i`` of ``spec`` over the valid input rows ``df`` (see the module
    docstring). Exact statistics: operator-only, never to be published."""
    table = spec.tables[i]
    dims = list(table.dimensions)
    columns = _columns(table)
    dist = _distributions(df, columns)
    if table.auto_bounds:  # the bounds the release will aim at, read off the data (not private)
        spec, columns = _aimed_at(spec, i, columns, dist)
        table = spec.tables[i]
    clamp_pairs = {c.name: _clamp_candidates(c, dist[c.name]["_all"]) for c in columns if c.clamped}

    aggs = [F.count(F.lit(1)).alias(N)]
    for c in columns:
        aggs.append(F.sum(F.col(c.name).cast("double")).alias(f"raw_{c.name}"))
        for j, (lo, hi) in enumerate(clamp_pairs.get(c.name, [])):
            aggs.append(F.sum(_clamp(c.name, lo, hi)).alias(f"c{j}_{c.name}"))
    unit = F.col(spec.input.privacy_unit).alias(UNIT)
    pairs = df.groupBy(unit, *dims).agg(*aggs)
    pairs = keep(pairs.withColumn(K, F.count(F.lit(1)).over(Window.partitionBy(UNIT))))
    try:
        return _analyze_pairs(pairs, spec, i, dims, columns, dist, clamp_pairs)
    finally:
        pairs.unpersist()


def _analyze_pairs(
    pairs: DataFrame,
    spec: ReleaseSpec,
    i: int,
    dims: list[str],
    columns: list[_Column],
    dist: dict[str, dict[str, Any]],
    clamp_pairs: dict[str, list[tuple[float, float]]],
) -> dict[str, Any]:
    cells_per_unit, rows_per_pair = _histograms(pairs)
    units = sum(u for _, u in cells_per_unit)
    if spec.tables[i].bounds.auto_partitions:  # the L0 the release will aim at (not private)
        aimed = _aimed_l0(cells_per_unit, spec.tables[i].auto_quantile, spec, i)
        spec = with_bounds(spec, i, max_partitions=aimed)
    table = spec.tables[i]
    b = table.bounds
    l0s = _candidates(b.max_partitions, max(k for k, _ in cells_per_unit))
    linfs = _candidates(b.max_rows_per_partition, max(n for n, _ in rows_per_pair))
    if not measures_rows(table):  # distinct units only: rows per cell change nothing
        linfs = [b.max_rows_per_partition]

    # contribution bounds: per cell the expected rows, units and sums kept, for every (a, r)
    grid = [(a, r) for a in l0s for r in linfs]
    spec_clamp = {
        c.name: clamp_pairs[c.name].index((c.lower, c.upper)) for c in columns if c.clamped
    }
    cell_aggs = [F.sum(N).alias("rows"), F.count(F.lit(1)).alias("units")]
    for a in l0s:
        cell_aggs.append(F.sum(_weight(a)).alias(f"units_{a}"))
    for a, r in grid:
        cell_aggs.append(F.sum(F.col(N) * _weight(a, r)).alias(f"rows_{a}_{r}"))
        for c in columns:
            if c.clamped:
                kept = F.col(f"c{spec_clamp[c.name]}_{c.name}") * _weight(a, r)
                cell_aggs.append(F.sum(kept).alias(f"sum_{c.name}_{a}_{r}"))
    for c in columns:
        cell_aggs.append(F.sum(f"raw_{c.name}").alias(f"raw_{c.name}"))
    private = isinstance(table.partitions, PrivatePartitions)
    cells = pairs.groupBy(*dims).agg(*cell_aggs)
    cells = keep(cells) if private else cells  # read twice only under private selection
    try:
        totals = _squared_biases(cells, l0s, grid, columns)
        per_cell = _cell_arrays(cells, l0s, grid) if private else None
        n_cells, total_rows = int(totals["cells"]), float(totals["rows"])
        candidates = []
        for a, r in grid:
            plan, sds = _sds(spec, i, max_partitions=a, max_rows_per_partition=r)
            entry: dict[str, Any] = {
                "max_partitions": a,
                "max_rows_per_partition": r,
                "noise": plan.family,
                "share_of_rows_dropped": 1 - totals[f"rows_{a}_{r}"] / total_rows,
                "expected_cell_error": {},
            }
            if "count" in sds:
                entry["expected_cell_error"]["count"] = _rmse(
                    totals[f"sqb_rows_{a}_{r}"], n_cells, sds["count"]
                )
            if "privacy_unit_count" in sds:
                entry["expected_cell_error"]["privacy_unit_count"] = _rmse(
                    totals[f"sqb_units_{a}"], n_cells, sds["privacy_unit_count"]
                )
            for c, v in _sum_columns(plan, columns):
                true, left = totals[f"raw_{c.name}"], totals[f"sum_{c.name}_{a}_{r}"]
                entry[f"share_of_sum_{c.name}_dropped"] = (true - left) / true if true else 0.0
                entry["expected_cell_error"][f"sum_{c.name}"] = _rmse(
                    totals[f"sqb_sum_{c.name}_{a}_{r}"], n_cells, sds[v.sum_name]
                )
            if per_cell is not None:
                _with_selection(entry, per_cell, plan, sds, a, r)
            candidates.append(entry)
        best = min(candidates, key=_objective)
        a, r = best["max_partitions"], best["max_rows_per_partition"]
        clamps = _clamps(pairs, dims, spec, i, a, r, columns, clamp_pairs, n_cells)
    finally:
        cells.unpersist()
    recommended: dict[str, Any] = {"max_partitions": a, "max_rows_per_partition": r}
    for name, options in clamps.items():
        pick = min(options, key=lambda o: o["expected_cell_error"])
        recommended[name] = {"lower": pick["lower"], "upper": pick["upper"]}
    for d in dist.values():
        d.pop("_all")
    return {
        "table": table.name,
        "privacy": NOT_PRIVATE,
        "units": units,
        "cells_with_data": n_cells,
        "rows": int(total_rows),
        "cells_per_unit": {
            "histogram": cells_per_unit,
            "share_of_units_above_max_partitions": _share_above(cells_per_unit, b.max_partitions),
        },
        "rows_per_unit_and_cell": {
            "histogram": rows_per_pair,
            "share_of_pairs_above_max_rows_per_partition": _share_above(
                rows_per_pair, b.max_rows_per_partition
            ),
        },
        "values": dist,
        "contribution_bounds": candidates,
        "clamps": clamps,
        **({"private_selection": SELECTION_NOTE} if private else {}),
        "recommended": recommended,
        "spec": {
            "max_partitions": b.max_partitions,
            "max_rows_per_partition": b.max_rows_per_partition,
            **{c.name: {"lower": c.lower, "upper": c.upper} for c in columns if c.clamped},
        },
    }


def _aimed_l0(cells_per_unit: list[list[int]], q: float, spec: ReleaseSpec, i: int) -> int:
    """The smallest L0 candidate that at least ``q`` of the units fit in: what ``max_partitions:
    auto`` aims at, within a factor 2."""
    grid = l0_candidates(declared_cell_count(spec, spec.tables[i]))
    units = sum(u for _, u in cells_per_unit)
    for c in grid:
        if sum(u for k, u in cells_per_unit if k <= c) >= q * units:
            return int(c)
    return int(grid[-1])


def measures_rows(table: TableSpec) -> bool:
    """Whether more rows per unit and cell can change the table (anything but unit counts)."""
    return any(m.kind != "privacy_unit_count" for m in table.metrics)


def _share_above(histogram: list[list[int]], bound: int) -> float:
    total = sum(n for _, n in histogram)
    return sum(n for v, n in histogram if v > bound) / total if total else 0.0


def _sum_columns(plan: TablePlan, columns: list[_Column]) -> list[tuple[_Column, Any]]:
    """The clamped columns whose sum the plan measures, with the plan's value column."""
    values = {v.column: v for v in value_columns(plan.table)}
    return [(c, values[c.name]) for c in columns if c.clamped and c.name in values]


def _objective(entry: dict[str, Any]) -> float:
    """What the recommendation minimizes: the counts' expected error, else the first sum's."""
    errors = entry["expected_cell_error"]
    counts = [errors[k] for k in ("count", "privacy_unit_count") if k in errors]
    if counts:
        return float(sum(e * e for e in counts))
    return float(next(iter(errors.values()), 0.0)) ** 2


def _squared_biases(
    cells: DataFrame,
    l0s: list[int],
    grid: list[tuple[int, int]],
    columns: list[_Column],
) -> dict[str, float]:
    """Over the cells with data: totals, and sums of squared expected biases per candidate."""
    aggs = [F.count(F.lit(1)).alias("cells"), F.sum("rows").alias("rows")]
    for a in l0s:
        aggs.append(F.sum((F.col("units") - F.col(f"units_{a}")) ** 2).alias(f"sqb_units_{a}"))
    for a, r in grid:
        kept = F.col(f"rows_{a}_{r}")
        aggs.append(F.sum(kept).alias(f"rows_{a}_{r}"))
        aggs.append(F.sum((F.col("rows") - kept) ** 2).alias(f"sqb_rows_{a}_{r}"))
        for c in columns:
            if c.clamped:
                s = F.col(f"sum_{c.name}_{a}_{r}")
                aggs.append(F.sum(s).alias(f"sum_{c.name}_{a}_{r}"))
                bias = (F.col(f"raw_{c.name}") - s) ** 2
                aggs.append(F.sum(bias).alias(f"sqb_sum_{c.name}_{a}_{r}"))
    for c in columns:
        aggs.append(F.sum(f"raw_{c.name}").alias(f"raw_{c.name}"))
    row = cells.agg(*aggs).first()
    if row is None:
        return {}
    return {k: float(v or 0.0) for k, v in row.asDict().items()}


def _clamps(
    pairs: DataFrame,
    dims: list[str],
    spec: ReleaseSpec,
    i: int,
    a: int,
    r: int,
    columns: list[_Column],
    clamp_pairs: dict[str, list[tuple[float, float]]],
    n_cells: int,
) -> dict[str, list[dict[str, Any]]]:
    """Per clamped column and candidate clamp, at contribution bounds (a, r): the share of the
    column's total the clamp and the bounds drop, and the expected error of a cell's sum."""
    clamped = [c for c in columns if c.clamped]
    if not clamped:
        return {}
    aggs = []
    for c in clamped:
        aggs.append(F.sum(f"raw_{c.name}").alias(f"raw_{c.name}"))
        for j in range(len(clamp_pairs[c.name])):
            aggs.append(F.sum(F.col(f"c{j}_{c.name}") * _weight(a, r)).alias(f"k{j}_{c.name}"))
    cells = pairs.groupBy(*dims).agg(*aggs)
    totals = []
    for c in clamped:
        raw = F.col(f"raw_{c.name}")
        totals.append(F.sum(raw).alias(f"raw_{c.name}"))
        for j in range(len(clamp_pairs[c.name])):
            kept = F.col(f"k{j}_{c.name}")
            totals.append(F.sum(kept).alias(f"k{j}_{c.name}"))
            totals.append(F.sum((raw - kept) ** 2).alias(f"sq{j}_{c.name}"))
    row = cells.agg(*totals).first()
    if row is None:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for c in clamped:
        true = float(row[f"raw_{c.name}"] or 0.0)
        options = []
        for j, (lo, hi) in enumerate(clamp_pairs[c.name]):
            plan, sds = _sds(
                spec, i, max_partitions=a, max_rows_per_partition=r, clamps={c.name: (lo, hi)}
            )
            sum_name = next(v.sum_name for v in value_columns(plan.table) if v.column == c.name)
            left = float(row[f"k{j}_{c.name}"] or 0.0)
            options.append(
                {
                    "lower": lo,
                    "upper": hi,
                    "share_of_sum_dropped": (true - left) / true if true else 0.0,
                    "noise_sd_of_sum": sds[sum_name],
                    "expected_cell_error": _rmse(
                        float(row[f"sq{j}_{c.name}"] or 0.0), n_cells, sds[sum_name]
                    ),
                }
            )
        out[c.name] = options
    return out


SELECTION_NOTE = (
    "cells are selected privately: each candidate states the expected number of cells with data "
    "released, and its expected cell errors count a cell left out as an error of its whole value "
    "(p (bias^2 + noise variance) + (1 - p) value^2, p the cell's chance of release with its "
    "expected units kept, rounded)"
)


def _cell_arrays(
    cells: DataFrame, l0s: list[int], grid: list[tuple[int, int]]
) -> dict[str, np.ndarray]:
    """The per-cell columns private selection needs, on the driver (one row per cell with data)."""
    names = ["rows", "units", *(f"units_{a}" for a in l0s), *(f"rows_{a}_{r}" for a, r in grid)]
    table = to_arrow(cells.select(*names))
    return {n: table.column(n).to_numpy().astype(float) for n in names}


def _with_selection(
    entry: dict[str, Any],
    cells: dict[str, np.ndarray],
    plan: TablePlan,
    sds: dict[str, float],
    a: int,
    r: int,
) -> None:
    """Add to a candidate's entry the expected cells released and selection-aware errors."""
    sel = plan.selection
    if sel is None:
        return
    kept_units = np.rint(cells[f"units_{a}"]).astype(np.int64)
    chance = {int(u): sel.keep_probability(int(u), plan.units_noise) for u in np.unique(kept_units)}
    p = np.array([chance[int(u)] for u in kept_units], dtype=float)
    entry["expected_cells_released"] = float(p.sum())
    errors = entry["expected_cell_error"]
    for metric, true, kept in (
        ("count", cells["rows"], cells[f"rows_{a}_{r}"]),
        ("privacy_unit_count", cells["units"], cells[f"units_{a}"]),
    ):
        if metric in errors:
            mse = p * ((true - kept) ** 2 + sds[metric] ** 2) + (1 - p) * true**2
            errors[metric] = float(np.sqrt(mse.mean())) if len(mse) else 0.0
