"""The privacy section of the manifest, built from the plan alone (no data, no counts)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from dp_ops import selection
from dp_ops.selection import normal_ppf
from dp_ops.top_k import gap_for, probability_first_is_best
from pipelines.plan import (
    NoiseParams,
    ReleaseCost,
    ReleasePlan,
    TablePlan,
    coarse_measurements,
    declared_cell_count,
    histograms,
)
from pipelines.spec import (
    CATEGORY_KINDS,
    SPREAD_KINDS,
    BudgetSpec,
    MetricSpec,
    PrivatePartitions,
)


def _num(x: Fraction) -> float:
    return float(x)


def noise_report(n: NoiseParams, confidence: float) -> dict[str, Any]:
    sd, sd_exact = n.sd()
    half, half_exact = n.halfwidth(1 - confidence)
    coverage, coverage_exact = n.coverage(half)
    out: dict[str, Any] = {
        "mechanism": n.mechanism,
        "epsilon": _num(n.epsilon),
        "rho": _num(n.rho),
        "sensitivity": {
            "per_partition": n.sensitivity.per_partition,
            "max_partitions": n.sensitivity.partitions,
        },
        "noise_parameter": {
            "name": "scale" if n.mechanism == "discrete_laplace" else "sigma_squared",
            "value": _num(n.parameter),
            "exact": f"{n.parameter.numerator}/{n.parameter.denominator}",
            "units": "grid steps" if n.unit != 1.0 else "released units",
        },
        "standard_deviation": sd * n.unit,
        "interval": {
            "confidence": confidence,
            "half_width": half * n.unit,
            "exact": half_exact and sd_exact,
            "coverage": coverage,
            "coverage_exact": coverage_exact,
            "meaning": (
                "released value +- half_width covers the noised aggregate with probability "
                "coverage (exact for the discrete noise, at least confidence: the smallest whole "
                "number of steps that reaches it); clamping at zero changes it near zero"
            ),
        },
    }
    if n.unit != 1.0:
        out["granularity"] = n.unit
    return out


def _sum_report(t: TablePlan, column: str, confidence: float) -> dict[str, Any]:
    v = next(x for x in t.values if x.column == column)
    out = noise_report(t.noise_for(v.sum_name), confidence)
    if v.center == 0:
        return out
    # released sum = (centered sum + center * count) * granularity: two independent noises
    sd_sum, _ = t.noise_for(v.sum_name).sd()
    sd_count, _ = t.noise_for("count").sd()
    sd = math.sqrt(sd_sum**2 + (v.center * sd_count) ** 2) * v.granularity
    z = normal_ppf(1 - (1 - confidence) / 2)
    out["centered_at"] = v.center * v.granularity
    out["standard_deviation"] = sd
    out["interval"] = {"confidence": confidence, "half_width": z * sd, "exact": False}
    out["mechanism"] = f"{out['mechanism']} on the centered sum, plus center x noisy count"
    return out


CATEGORY_GAPS = (1, 2, 5, 10, 20, 50, 100)
"""Leads (in rows) at which the manifest states the probability of naming the true mode."""


def categories_report(t: TablePlan, m: MetricSpec) -> dict[str, Any]:
    """A mode's or top-k's mechanism, budget, and how large a lead it needs."""
    cell = t.cell_epsilon(m)
    each = float(cell) / m.k
    s = t.table.bounds.max_rows_per_partition
    n = len(m.categories)
    return {
        "columns": list(m.output_names),
        "categories": [str(c) for c in m.categories],
        "mechanism": (
            "exponential mechanism over the cell's row count per category (monotone, "
            f"sensitivity max_rows_per_partition = {s}), {m.k} pick(s) without replacement, "
            "each with epsilon_per_pick; sampled exactly (dp_ops.top_k). Counts are never "
            "released; an empty cell names categories at random"
        ),
        "epsilon": _num(cell * t.table.bounds.max_partitions),
        "epsilon_per_cell": _num(cell),
        "epsilon_per_pick": each,
        "probability_first_is_the_mode": {
            str(g): probability_first_is_best(n, g, each, s) for g in CATEGORY_GAPS
        },
        "lead_for_95_percent": gap_for(0.95, n, each, s),
        "meaning": (
            "probability_first_is_the_mode[g]: at least this probability that the first "
            "category named is the most common one when it has g more rows than every other; "
            "lead_for_95_percent: the lead that makes it 0.95"
        ),
    }


def _proportion_report(t: TablePlan, m: MetricSpec) -> dict[str, Any]:
    d = m.design
    out: dict[str, Any] = {
        "columns": list(m.output_names),
        "derived_from": ["count", f"sum_{m.column}"],
        "interval": {
            "confidence": m.confidence,
            "exact": False,
            "method": "normal, per cell: estimate +- z x standard error (released beside it)",
        },
    }
    if d is None:
        out["mechanism"] = (
            "post-processing: noisy number of 1s / max(noisy count, 1), not clamped; the "
            "standard error is the noise's (delta method)"
        )
        return out
    out["mechanism"] = (
        "post-processing: (noisy share of yes reports - (1 - p_truth) x p_yes) / p_truth, the "
        "randomized-response design's unbiased estimate, not clamped to [0, 1]; standard error "
        "from the design's coin flips and the noise (delta method)"
    )
    out["randomized_response"] = {
        "p_truth": _num(d.p_truth),
        "p_yes": _num(d.p_yes),
        "local_epsilon": d.local_epsilon,
    }
    return out


def selection_report(t: TablePlan, confidence: float) -> dict[str, Any]:
    s = t.selection
    if s is None:
        return {"type": "public"}
    out: dict[str, Any] = {
        "type": "private",
        "strategy": s.strategy,
        "statistic": "distinct privacy units per partition, after bounding",
        "pre_threshold": s.pre_threshold,
        "epsilon": _num(s.epsilon),
        "delta": _num(s.delta),
        "units_for_even_odds": s.units_for_even_odds(t.units_noise),
        "units_for_95_percent": s.units_for_probability(0.95, t.units_noise),
    }
    if s.strategy == "truncated_geometric":
        out["rule"] = "released with probability p(units); p = 0 below pre_threshold"
        out["delta_rounding_slack"] = selection.TG_ROUNDING_SLACK
        return out
    out["threshold"] = s.threshold
    out["rule"] = (
        "released iff units >= pre_threshold and units - pre_threshold + 1 + noise >= threshold"
    )
    if s.strategy == "post_aggregation":
        out["noise"] = f"the released {s.carrier}'s own noise (no separate budget)"
        if s.carrier == "count":
            out["noise"] += (
                "; with max_rows_per_partition 1 the bounded row count is the unit count"
            )
    elif s.noise is not None:
        out["noise"] = {
            k: v for k, v in noise_report(s.noise, confidence).items() if k != "epsilon"
        }
    return out


CLAMPING_COUNTS = (0, 1, 2, 5, 10, 20, 50)
"""True cell counts at which the manifest states the expected shift clamping at zero causes."""


def clamping_report(noise: NoiseParams, cells: int | None) -> dict[str, Any]:
    """What clamping counts at zero does to a public-keys table without levels, from the noise
    alone (no data): the expected upward shift of a cell by its true count, and at most for the
    table's total (every cell empty is the worst case)."""
    shifts = {n: noise.clamping_shift(n) for n in CLAMPING_COUNTS}
    worst = shifts[0][0]
    return {
        "expected_shift_by_true_count": {str(n): v for n, (v, _) in shifts.items()},
        "exact": all(e for _, e in shifts.values()),
        "per_cell_at_most": worst,
        "cells": cells,
        "expected_total_shift_at_most": worst * cells if cells is not None else None,
        "meaning": (
            "released counts are clamped at zero (output.nonnegative_counts), which raises a "
            "cell's expected value by the shift for its true count: most for empty cells, "
            "little beyond a few standard deviations. The released cells' expected total is "
            "above the true total by the sum of the shifts, at most per_cell_at_most per cell "
            "(with levels, the levels' projection keeps totals instead)"
        ),
    }


def table_report(
    t: TablePlan, confidence: float, nonnegative: bool = True, cells: int | None = None
) -> dict[str, Any]:
    """The manifest's entry for a table: budget, mechanisms, accuracy. ``cells``: the number of
    public cells when the spec declares them (for the clamping statement)."""
    metrics = []
    for m in t.table.metrics:
        entry: dict[str, Any] = {"name": m.output_name, "kind": m.kind}
        if m.column is not None:
            entry["column"] = m.column
            if m.kind not in CATEGORY_KINDS:
                entry["clamp"] = [m.lower, m.upper]
        if m.kind == "mean":
            entry["mechanism"] = (
                "post-processing: noisy sum / max(noisy count, 1), clamped to bounds"
            )
            entry["derived_from"] = ["count", f"sum_{m.column}"]
        elif m.kind == "sum":
            entry.update(_sum_report(t, m.column or "", confidence))
        elif m.kind == "proportion":
            entry.update(_proportion_report(t, m))
        elif m.kind in CATEGORY_KINDS:
            entry.update(categories_report(t, m))
        elif m.kind in SPREAD_KINDS:
            sq = t.squares_of(m.column or "")
            entry["mechanism"] = (
                "post-processing: noisy squares / n - (noisy centered sum / n)^2 with n the "
                "noisy count, clamped to [0, ((upper - lower) / 2)^2]"
            )
            entry["derived_from"] = ["count", f"sum_{m.column}", sq.measure]
            entry["squares"] = noise_report(t.noise_for(sq.measure), confidence)
            entry["interval"] = {"confidence": confidence, "half_width": None, "exact": False}
        elif m.kind in ("histogram", "quantiles"):
            h = next(h for h in histograms(t.table) if h.metric == m)
            entry["columns"] = list(m.output_names)
            entry["bin_edges"] = list(m.edges)
            entry.update(noise_report(t.noise_for(h.measure), confidence))
            entry["measurement"] = (
                "one noisy count per bin (values clamped into the edges), noised together: a "
                "unit's rows fall in at most max_rows_per_partition bins"
            )
            if m.kind == "quantiles":
                entry["probabilities"] = list(m.probabilities)
                entry["mechanism"] = (
                    "post-processing of the noisy histogram over the public grid (bins clamped "
                    "at zero): interpolated where the cumulative count reaches p x total"
                )
                entry["interval"] = {
                    "confidence": confidence,
                    "half_width": None,
                    "exact": False,
                    "note": "no closed form; the error is at least the grid step",
                }
        else:
            entry.update(noise_report(t.noise_for(m.kind), confidence))
            clamps = nonnegative and not t.table.consistent and t.selection is None
            if clamps and m.kind in ("count", "privacy_unit_count"):
                entry["clamping"] = clamping_report(t.noise_for(m.kind), cells)
        metrics.append(entry)
    p = t.table.partitions
    partitions: dict[str, Any]
    if isinstance(p, PrivatePartitions) and t.selection is not None:
        partitions = selection_report(t, confidence)
        partitions["declared_cells"] = cells  # the cells selection chooses from, when declared
    else:
        partitions = {"type": "public", "source": getattr(p, "source", "inline")}
    return {
        "name": t.table.name,
        "dimensions": list(t.table.dimensions),
        "bounds": {
            "max_partitions": t.table.bounds.max_partitions,
            "max_rows_per_partition": t.table.bounds.max_rows_per_partition,
        },
        "budget": {
            "epsilon": _num(t.epsilon),
            "delta": _num(t.delta),
            "rho": _num(t.rho) if t.rho is not None else None,
            "zcdp_rho": _num(t.zcdp_cost) if t.zcdp_cost is not None else None,
            "noise_family": t.family,
            "measurement_epsilon": _num(t.measurement_epsilon),
            "measurement_delta": _num(t.measurement_delta),
            "measurement_rho": _num(sum((m.rho for m in t.measurements), Fraction(0))),
            "bounds_epsilon": _num(t.auto_epsilon),
            "categories_epsilon": _num(t.choice_epsilon),
        },
        "partitions": partitions,
        "metrics": metrics,
        **({"levels": levels_report(t, confidence)} if t.table.consistent else {}),
        **({"chosen_bounds": chosen} if (chosen := chosen_bounds_report(t)) else {}),
    }


def chosen_bounds_report(t: TablePlan) -> dict[str, Any] | None:
    """The bounds the release chose itself (``auto``): which, their values, and their cost;
    None for a table without (its bounds are all the spec's)."""
    auto = [m for m in t.table.metrics if m.auto and m.column is not None]
    l0 = t.table.bounds.auto_partitions
    if not auto and not l0:
        return None
    columns: dict[str, Any] = {}
    for m in auto:
        columns.setdefault(
            m.column or "",
            {
                "chosen": [s for s in m.auto if s != "granularity"],
                "lower": m.lower,
                "upper": m.upper,
                "granularity": m.granularity,
            },
        )
    return {
        "mechanism": "exponential mechanism over 0 and +-2^j, exact sampling (dp_ops.quantiles)",
        "statistic": "each unit's largest value (upper) or smallest (lower); for L0, its number "
        "of cells in the table",
        "quantile": t.table.auto_quantile,
        "epsilon": _num(t.auto_epsilon),
        "columns": columns,
        **({"max_partitions": t.table.bounds.max_partitions} if l0 else {}),
    }


def levels_report(t: TablePlan, confidence: float) -> dict[str, Any]:
    """The consistent levels of a table: the raw measurement of each, and what is released."""
    outputs = []
    coarse = {
        (i, column.split("@")[0]): column for column, i in coarse_measurements(t.table).items()
    }
    for i, (name, dims) in enumerate(t.table.outputs):
        measured = []
        for m in t.table.metrics:
            column = coarse.get((i, m.kind), m.kind)  # the finest table: the metric's own
            measured.append(
                {"name": m.output_name, **noise_report(t.noise_for(column), confidence)}
            )
        entry: dict[str, Any] = {"name": name, "dimensions": list(dims)}
        entry["budget_share"] = _num(t.output_shares[i])
        if t.table.level_weights:
            entry["budget_weight"] = t.table.level_weights[i]
        outputs.append({**entry, "measurements": measured})
    if t.table.geography:
        post = (
            "per metric, generalized least squares of every geographic unit's detailed table "
            "from all measurements of all levels (exact two-pass method with matrices); the "
            "detailed tables are then made non-negative integers top-down (per parent and "
            "attribute cell, a projection onto non-negative values with the parent's value and "
            "largest-remainder rounding), and every released table is a sum of the finest "
            "detailed table: all tables at all levels add up exactly"
        )
    else:
        post = (
            "per metric, generalized least squares over the levels (exact two-pass method), then "
            "per parent a projection onto non-negative values with the parent's total and "
            "largest-remainder rounding: every level adds up exactly, counts are non-negative "
            "integers"
        )
    return {
        "outputs": outputs,
        "allocation": _allocation_report(t),
        "post_processing": post,
        "per_cell_error": {
            "columns": "<metric>_sd and <metric>_halfwidth on every released cell",
            "exact": "the standard deviation is exact for the least-squares estimate; the normal "
            "half-width and both figures for the clamped, rounded value released are approximate",
            "confidence": confidence,
        },
    }


def _allocation_report(t: TablePlan) -> dict[str, Any]:
    """How the table's budget was split over its levels, and what that costs the detailed cells."""
    if t.table.level_weights:
        rule = "explicit level_weights"
    else:
        rule = (
            f"max_detail_loss {t.table.max_detail_loss:g}: the table's own cells get the smallest "
            "share that keeps their released error within that fraction of their noise with the "
            "table's whole budget (half of it for the noise alone where rounding to whole "
            "persons takes more); the levels share the rest equally"
        )
    return {
        "rule": rule,
        "detail_share": _num(t.output_shares[-1]),
        "detail_error_growth": t.detail_error_growth,
        "meaning": (
            "detail_error_growth: the standard deviation of a detailed cell's noise plus the most "
            "rounding to whole persons adds (1/4 in mean square), over its noise with the "
            "table's whole budget and no levels; least squares over the levels only lowers it"
        ),
    }


def randomized_response_report(plan: ReleasePlan) -> dict[str, Any]:
    """The local guarantee of each randomized-response question, beside the central one."""
    return {
        "columns": {
            d.column: {
                "p_truth": _num(d.p_truth),
                "p_yes": _num(d.p_yes),
                "local_epsilon": d.local_epsilon,
            }
            for d in plan.spec.input.randomized_response
        },
        "meaning": (
            "each respondent's reported answer is local_epsilon-DP about their true answer on "
            "its own, before and whatever any release does; the release is also DP, with the "
            "declared budget, about everything each person contributed (reported answers "
            "included). Both hold at once: the true answers are protected by the local epsilon "
            "even against whoever holds the microdata, and by both against readers of the "
            "release"
        ),
    }


def declared_report(budget: BudgetSpec) -> dict[str, Any]:
    """The manifest's ``budget.declared``: the budget exactly as the spec states it."""
    return {
        "epsilon": _num(budget.epsilon) if budget.epsilon is not None else None,
        "delta": _num(budget.delta),
        "rho": _num(budget.rho) if budget.rho is not None else None,
    }


SPENT_MEANING = (
    "(epsilon, delta)-DP and rho-zCDP guarantees of the whole release; a null is a "
    "guarantee the release does not state (rho without a conversion delta, or zCDP "
    "with private selection)"
)


def spent_report(cost: ReleaseCost, meaning: str = SPENT_MEANING) -> dict[str, Any]:
    """The manifest's ``budget.spent``: what the release's mechanisms guarantee."""
    return {
        "epsilon": _num(cost.epsilon) if cost.epsilon is not None else None,
        "delta": _num(cost.delta),
        "rho": _num(cost.rho) if cost.rho is not None else None,
        "meaning": meaning,
    }


def privacy_report(plan: ReleasePlan) -> dict[str, Any]:
    conf = plan.spec.output.confidence
    return {
        "declared": declared_report(plan.spec.budget),
        "spent": spent_report(plan.cost),
        "composition": (
            "sequential over tables and selection; zCDP within a Gaussian table's measurements"
        ),
        **(
            {"randomized_response": randomized_response_report(plan)}
            if plan.spec.input.randomized_response
            else {}
        ),
        "tables": [
            table_report(
                t,
                conf,
                plan.spec.output.nonnegative_counts,
                declared_cell_count(plan.spec, t.table),
            )
            for t in plan.tables
        ],
    }
