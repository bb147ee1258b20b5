"""What a spec would release, known before any data is read or any budget spent (``dprelease
plan``): the manifest's privacy section (:func:`pipelines.report.privacy_report`), a short
accuracy line per table and metric, and what doubling or halving each bound would do to the
noise.

Everything here follows from the spec alone. Bounds trade two errors: a larger bound adds noise
(this module states how much) and drops less data (only the data can say how much: ``dprelease
analyze``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dp_ops.errors import SpecError
from pipelines.plan import (
    TablePlan,
    auto_measures,
    histograms,
    plan_release,
    plan_warnings,
    squares,
)
from pipelines.report import noise_report, privacy_report
from pipelines.series import plan_series, series_report
from pipelines.spec import HISTOGRAM_KINDS, ReleaseSpec, TableSpec

FACTORS = (2.0, 0.5)
"""Each bound is shown doubled and halved."""


@dataclass(frozen=True)
class BoundChange:
    """One bound of one table, changed: ``bound`` names it as the spec does."""

    table: int
    bound: str
    before: float
    after: float
    spec: ReleaseSpec
    """The whole spec with the change (the budget split is the same: weights do not change)."""


def with_bounds(
    spec: ReleaseSpec,
    table: int,
    max_partitions: int | None = None,
    max_rows_per_partition: int | None = None,
    clamps: dict[str, tuple[float, float]] | None = None,
) -> ReleaseSpec:
    """``spec`` with table ``table``'s bounds changed: contribution bounds, and ``clamps``
    (column -> (lower, upper)) for the metrics that clamp that column (histograms and quantiles
    keep their edges). The budget split does not change: weights stay."""
    t = spec.tables[table]
    b = t.bounds
    bounds = dataclasses.replace(
        b,
        max_partitions=b.max_partitions if max_partitions is None else max_partitions,
        max_rows_per_partition=(
            b.max_rows_per_partition if max_rows_per_partition is None else max_rows_per_partition
        ),
    )
    clamps = clamps or {}
    metrics = tuple(
        dataclasses.replace(m, lower=clamps[m.column][0], upper=clamps[m.column][1])
        if m.column in clamps and m.kind not in HISTOGRAM_KINDS
        else m
        for m in t.metrics
    )
    tables = list(spec.tables)
    tables[table] = dataclasses.replace(t, bounds=bounds, metrics=metrics)
    return dataclasses.replace(spec, tables=tuple(tables))


def value_bounds(table: TableSpec) -> dict[str, tuple[float, float]]:
    """The clamped value columns of a table and their (lower, upper); histograms and quantiles
    read their bins' edges instead, and a proportion's answers are 0 or 1."""
    out: dict[str, tuple[float, float]] = {}
    for m in table.metrics:
        if m.kind in (*HISTOGRAM_KINDS, "proportion") or m.column is None:
            continue
        if m.lower is not None and m.upper is not None:
            out.setdefault(m.column, (m.lower, m.upper))
    return out


def bound_changes(spec: ReleaseSpec) -> Iterator[BoundChange]:
    """Every bound of every table doubled and halved, where the result is a valid bound: whole
    numbers of at least 1 for max_partitions and max_rows_per_partition, a non-empty range for
    a column's lower and upper (a bound of 0 stays 0 and is left out)."""
    for i, t in enumerate(spec.tables):
        b = t.bounds
        for factor in FACTORS if not b.auto_partitions else ():  # auto: chosen when it runs
            l0 = max(1, int(b.max_partitions * factor))
            if l0 != b.max_partitions:
                changed = with_bounds(spec, i, max_partitions=l0)
                yield BoundChange(i, "bounds.max_partitions", b.max_partitions, l0, changed)
        for factor in FACTORS:
            linf = max(1, int(b.max_rows_per_partition * factor))
            if linf != b.max_rows_per_partition:
                changed = with_bounds(spec, i, max_rows_per_partition=linf)
                name = "bounds.max_rows_per_partition"
                yield BoundChange(i, name, b.max_rows_per_partition, linf, changed)
        auto = {m.column for m in t.metrics if m.auto}
        for column, (lower, upper) in value_bounds(t).items():
            if column in auto:  # chosen when the release runs
                continue
            for factor in FACTORS:
                for side in ("lower", "upper"):
                    value = lower if side == "lower" else upper
                    lo, hi = (value * factor, upper) if side == "lower" else (lower, value * factor)
                    if (lo, hi) == (lower, upper) or not lo < hi:
                        continue
                    changed = with_bounds(spec, i, clamps={column: (lo, hi)})
                    yield BoundChange(i, f"{column}.{side}", value, value * factor, changed)


def _label(t: TablePlan, column: str, grid: bool = True) -> str:
    """A measured column named for people: what it counts, at which level (and a sum's grid,
    unless ``grid`` is False: bounds chosen at run time have none yet)."""
    base, _, level = column.partition("@")
    where = ""
    if level:
        if "_" in level:  # a suite's (geographic level, query)
            g, q = (int(x) for x in level.split("_"))
            dims = t.table.suite_dimensions(g, q)
        else:
            dims = t.table.outputs[int(level)][1]
        where = f" by {', '.join(dims)}" if dims else " in all"
    for v in t.values:
        if base == v.sum_name:
            centered = f", centered at {v.center * v.granularity:g}" if v.center else ""
            return f"sum_{v.column}{where}" + (
                f" (grid {v.granularity:g}{centered})" if grid else ""
            )
    for sq in squares(t.table, t.values):
        if base == sq.measure:
            return f"squares of {sq.value.column}{where}"
    for h in histograms(t.table):
        if base == h.measure:
            return f"{h.metric.output_name} bins{where}"
    return f"{base}{where}"


def measurement_lines(t: TablePlan, confidence: float) -> list[dict[str, Any]]:
    """Every noised column of a table, in released units: its mechanism, budget, noise
    standard deviation and interval half-width (the noise alone, before post-processing)."""
    auto = auto_measures(t)
    out = []
    for m in t.measurements:
        r = noise_report(m, confidence)
        unknown = m.column.partition("@")[0] in auto  # its bounds are chosen when it runs
        out.append(
            {
                "column": m.column,
                "measurement": _label(t, m.column, grid=not unknown)
                + (" (auto bounds)" if unknown else ""),
                "mechanism": m.mechanism,
                "epsilon": r["epsilon"],
                "rho": r["rho"],
                "standard_deviation": None if unknown else r["standard_deviation"],
                "half_width": None if unknown else r["interval"]["half_width"],
            }
        )
    return out


def _selection_units(t: TablePlan) -> dict[str, int | None] | None:
    s = t.selection
    if s is None:
        return None
    if t.table.bounds.auto_partitions:  # the threshold follows L0, chosen when it runs
        return {"0.5": None, "0.95": None}
    return {
        "0.5": s.units_for_even_odds(t.units_noise),
        "0.95": s.units_for_probability(0.95, t.units_noise),
    }


def _effect(before: TablePlan, after: TablePlan, confidence: float) -> dict[str, Any]:
    """What a change of bound does to one table: each measurement's noise standard deviation
    before and after, the noise family where it changes, the units a privately selected cell
    needs for even odds."""
    old = {m["column"]: m for m in measurement_lines(before, confidence)}
    sds = {}
    for m in measurement_lines(after, confidence):
        was = old.get(m["column"])
        if was is not None and None not in (was["standard_deviation"], m["standard_deviation"]):
            sds[was["measurement"]] = [was["standard_deviation"], m["standard_deviation"]]
    out: dict[str, Any] = {"standard_deviation": sds}
    if before.family != after.family:
        out["noise_family"] = [before.family, after.family]
    units = _selection_units(before), _selection_units(after)
    if units[0] is not None and units[1] is not None and units[0]["0.5"] is not None:
        out["units_for_even_odds"] = [units[0]["0.5"], units[1]["0.5"]]
    return out


def preview(spec: ReleaseSpec) -> dict[str, Any]:
    """The plan of ``spec`` for people and programs (``dprelease plan --json``): no data is read
    and nothing is spent. Raises SpecError for a spec ``dprelease run`` would refuse.

    Per table: its budget, every noised measurement (:func:`measurement_lines`), the released
    metrics as the manifest states them, for private selection the units at which a cell is
    released with probability 0.5 and 0.95, and every bound doubled and halved
    (:func:`bound_changes`) with what that does to the noise. ``privacy`` is the manifest's
    privacy section as the release would write it."""
    conf = spec.output.confidence
    plan = plan_release(spec)
    privacy = privacy_report(plan)
    tables = []
    for t, report in zip(plan.tables, privacy["tables"], strict=True):
        tables.append(
            {
                "name": t.table.name,
                "budget": report["budget"],
                "partitions": report["partitions"],
                "measurements": measurement_lines(t, conf),
                "metrics": [
                    {
                        k: m[k]
                        for k in (
                            "name",
                            "mechanism",
                            "standard_deviation",
                            "interval",
                            "derived_from",
                            "epsilon_per_pick",
                            "lead_for_95_percent",
                            "categories",
                        )
                        if k in m
                    }
                    for m in report["metrics"]
                ],
                "selection_units": _selection_units(t),
                **({"chosen_bounds": _auto_summary(t)} if t.table.auto_bounds else {}),
                **({"allocation": report["levels"]["allocation"]} if "levels" in report else {}),
                "bound_changes": [],
            }
        )
    for change in bound_changes(spec):
        entry: dict[str, Any] = {"bound": change.bound, "from": change.before, "to": change.after}
        try:
            changed = plan_release(change.spec).tables[change.table]
        except SpecError as exc:  # e.g. noise beyond the 64-bit range
            entry["refused"] = str(exc)
        else:
            entry.update(_effect(plan.tables[change.table], changed, conf))
        tables[change.table]["bound_changes"].append(entry)
    return {
        "reads_data": False,
        "spends_budget": False,
        "declared": privacy["declared"],
        "spent": {k: v for k, v in privacy["spent"].items() if k != "meaning"},
        "confidence": conf,
        "tables": tables,
        "warnings": list(plan_warnings(plan)),
        "privacy": privacy,
        **(
            {"series": series_report(plan_series(spec, plan), spec.series.horizon, conf)}
            if spec.series is not None
            else {}
        ),
    }


def _auto_summary(t: TablePlan) -> dict[str, Any]:
    """What the release will choose itself, and what that costs."""
    sides = {m.column: [x for x in m.auto if x != "granularity"] for m in t.table.metrics if m.auto}
    return {
        "columns": sides,
        "max_partitions": t.table.bounds.auto_partitions,
        "epsilon": float(t.auto_epsilon),
        "quantile": t.table.auto_quantile,
    }
