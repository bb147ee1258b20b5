"""The budget plan of a release: who spends what, with which mechanism and noise.

Pure Python over the spec (no Spark), so the whole plan, and the manifest's privacy section, is
known and checked before any data is touched.

Split: the release's (epsilon, delta) goes to tables by weight. Inside a table, private selection
(if any) takes ``weight`` shares of epsilon against one share per measurement. Measurements are
the integer aggregates noised directly: ``count`` (rows), ``privacy_unit_count`` and one sum per
value column; a mean is post-processing of a sum and the count and costs nothing more.

Noise family per table: Laplace (pure epsilon-DP, split by plain composition) or discrete Gaussian
(rho-zCDP: the table's measurement (epsilon, delta) is converted once to rho with
Canonne-Kamath-Steinke Cor. 13 and rho is split, which beats adding (epsilon, delta) per
measurement). ``auto`` takes the family with the smaller total noise variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from dp_ops import accounting, accuracy, selection
from dp_ops.errors import InternalError
from dp_ops.fixed_point import grid_bounds
from dp_ops.rational import gaussian_variance, laplace_scale
from dp_ops.sensitivity import (
    Sensitivity,
    count_sensitivity,
    sum_sensitivity,
    unit_count_sensitivity,
)
from pipelines.aggregation import COUNT, UNITS
from pipelines.bounding import ValueColumn
from pipelines.spec import PrivatePartitions, ReleaseSpec, TableSpec

Family = Literal["laplace", "gaussian"]


@dataclass(frozen=True)
class NoiseParams:
    """One noised integer column: the sampler, its exact parameter and its accuracy."""

    column: str
    mechanism: Literal["discrete_laplace", "discrete_gaussian"]
    parameter: Fraction
    """Laplace scale, or Gaussian sigma^2, in the column's integer units."""
    sensitivity: Sensitivity
    epsilon: Fraction
    """Pure epsilon spent (Laplace); 0 for Gaussian."""
    rho: Fraction
    """rho-zCDP spent (Gaussian); 0 for Laplace."""
    unit: float = 1.0
    """Size of one integer step in released units (the fixed-point granularity for sums)."""

    def sd(self) -> tuple[float, bool]:
        if self.mechanism == "discrete_laplace":
            return accuracy.discrete_laplace_sd(self.parameter), True
        return accuracy.discrete_gaussian_sd(self.parameter)

    def halfwidth(self, alpha: float) -> tuple[int, bool]:
        if self.mechanism == "discrete_laplace":
            return accuracy.discrete_laplace_halfwidth(self.parameter, alpha), True
        return accuracy.discrete_gaussian_halfwidth(self.parameter, alpha)


@dataclass(frozen=True)
class SelectionPlan:
    noise: NoiseParams
    threshold: int
    """Keep a partition iff n >= pre_threshold and (n - pre_threshold + 1) + noise >= threshold."""
    pre_threshold: int
    epsilon: Fraction
    delta: Fraction


@dataclass(frozen=True)
class TablePlan:
    table: TableSpec
    epsilon: Fraction
    delta: Fraction
    family: Family
    measurements: tuple[NoiseParams, ...]
    values: tuple[ValueColumn, ...]
    selection: SelectionPlan | None

    @property
    def measurement_epsilon(self) -> Fraction:
        return self.epsilon - (self.selection.epsilon if self.selection else 0)

    @property
    def measurement_delta(self) -> Fraction:
        return self.delta - (self.selection.delta if self.selection else 0)

    def noise_for(self, column: str) -> NoiseParams:
        for m in self.measurements:
            if m.column == column:
                return m
        raise InternalError(f"no measurement planned for column {column!r}")


@dataclass(frozen=True)
class ReleasePlan:
    spec: ReleaseSpec
    tables: tuple[TablePlan, ...]

    @property
    def epsilon(self) -> Fraction:
        return sum((t.epsilon for t in self.tables), Fraction(0))

    @property
    def delta(self) -> Fraction:
        return sum((t.delta for t in self.tables), Fraction(0))


def measures_count(table: TableSpec) -> bool:
    return any(m.kind in ("count", "mean") for m in table.metrics)


def value_columns(table: TableSpec) -> tuple[ValueColumn, ...]:
    """The value columns of a table, centered when the count is measured anyway."""
    seen: dict[str, ValueColumn] = {}
    for m in table.metrics:
        if m.column is not None and m.column not in seen:
            if m.lower is None or m.upper is None or m.granularity is None:
                raise InternalError("value metric without bounds passed validation")
            q_lo, q_hi = grid_bounds(m.lower, m.upper, m.granularity)
            center = (q_lo + q_hi) // 2 if measures_count(table) else 0
            seen[m.column] = ValueColumn(m.column, m.lower, m.upper, m.granularity, center)
    return tuple(seen.values())


def _sensitivities(
    table: TableSpec, values: tuple[ValueColumn, ...]
) -> list[tuple[str, Sensitivity, float]]:
    kinds = {m.kind for m in table.metrics}
    l0, linf = table.bounds.max_partitions, table.bounds.max_rows_per_partition
    out: list[tuple[str, Sensitivity, float]] = []
    if measures_count(table):
        out.append((COUNT, count_sensitivity(l0, linf), 1.0))
    if "privacy_unit_count" in kinds:
        out.append((UNITS, unit_count_sensitivity(l0), 1.0))
    for v in values:
        q_lo, q_hi = grid_bounds(v.lower, v.upper, v.granularity)
        sens = sum_sensitivity(l0, linf, q_lo - v.center, q_hi - v.center)
        out.append((v.sum_name, sens, v.granularity))
    return out


def _measurements(
    family: Family, sens: list[tuple[str, Sensitivity, float]], epsilon: Fraction, delta: Fraction
) -> tuple[NoiseParams, ...]:
    k = len(sens)
    if family == "laplace":
        eps_i = epsilon / k
        return tuple(
            NoiseParams(
                c, "discrete_laplace", laplace_scale(s.l1, eps_i), s, eps_i, Fraction(0), unit
            )
            for c, s, unit in sens
        )
    rho_i = accounting.zcdp_rho(float(epsilon), float(delta)) / k
    return tuple(
        NoiseParams(
            c,
            "discrete_gaussian",
            gaussian_variance(s.l2_squared, rho_i),
            s,
            Fraction(0),
            rho_i,
            unit,
        )
        for c, s, unit in sens
    )


def _selection(
    p: PrivatePartitions, l0: int, family_delta_share: Fraction, eps: Fraction, delta: Fraction
) -> SelectionPlan:
    sens = unit_count_sensitivity(l0)
    if p.mechanism == "laplace":
        scale = laplace_scale(sens.l1, eps)
        threshold = selection.discrete_laplace_threshold(
            scale, selection.adjusted_delta(float(delta), l0)
        )
        noise = NoiseParams("_select", "discrete_laplace", scale, sens, eps, Fraction(0))
    else:
        delta_noise = delta * family_delta_share
        rho = accounting.zcdp_rho(float(eps), float(delta_noise))
        variance = gaussian_variance(sens.l2_squared, rho)
        delta_thr = float(delta - delta_noise)
        threshold = selection.discrete_gaussian_threshold(
            variance, selection.adjusted_delta(delta_thr, l0)
        )
        noise = NoiseParams("_select", "discrete_gaussian", variance, sens, eps, rho)
    return SelectionPlan(noise, threshold, p.pre_threshold, eps, delta)


def plan_table(table: TableSpec, epsilon: Fraction, delta: Fraction, family: Family) -> TablePlan:
    values = value_columns(table)
    sens = _sensitivities(table, values)
    chosen = table.partitions if isinstance(table.partitions, PrivatePartitions) else None
    private = chosen is not None
    if chosen is not None:
        w_sel = Fraction(chosen.weight)
        eps_sel, eps_meas = accounting.split(epsilon, [w_sel, len(sens)])
    else:
        eps_sel, eps_meas = Fraction(0), epsilon
    if family == "gaussian":
        delta_sel = delta / 2 if private else Fraction(0)
    else:
        delta_sel = delta if private else Fraction(0)
    delta_meas = delta - delta_sel
    if family == "gaussian" and delta_meas <= 0:
        raise InternalError("gaussian measurements planned without delta")
    measurements = _measurements(family, sens, eps_meas, delta_meas)
    sel = None
    if chosen is not None:
        sel = _selection(chosen, table.bounds.max_partitions, Fraction(1, 2), eps_sel, delta_sel)
    if family == "laplace" and not private:
        delta = Fraction(0)  # nothing in this table uses delta: it is not spent
    return TablePlan(table, eps_sel + eps_meas, delta, family, measurements, values, sel)


def _relative_variance(plan: TablePlan) -> float:
    return sum(m.sd()[0] ** 2 / m.sensitivity.per_partition**2 for m in plan.measurements)


def _plan_family(table: TableSpec, eps: Fraction, delta: Fraction, noise: str) -> TablePlan:
    if noise == "laplace" or delta == 0:
        return plan_table(table, eps, delta, "laplace")
    if noise == "gaussian":
        return plan_table(table, eps, delta, "gaussian")
    options = [plan_table(table, eps, delta, "laplace"), plan_table(table, eps, delta, "gaussian")]
    return min(options, key=_relative_variance)


def plan_release(spec: ReleaseSpec) -> ReleasePlan:
    """Split the budget and choose every mechanism; checks the plan never overspends.

    Epsilon goes to tables by weight. Delta goes by weight to the tables that use it (private
    selection or Gaussian noise): a first pass chooses each table's family with a provisional
    share of delta, a second hands the tables that use delta the whole of it.
    """
    weights = [t.weight for t in spec.tables]
    eps = accounting.split(Fraction(spec.budget.epsilon), weights)
    total_delta = Fraction(spec.budget.delta)
    zero = [Fraction(0)] * len(weights)
    dels = accounting.split(total_delta, weights) if total_delta > 0 else zero
    first = [
        _plan_family(t, e, d, spec.noise) for t, e, d in zip(spec.tables, eps, dels, strict=True)
    ]
    users = [i for i, p in enumerate(first) if p.delta > 0]
    plans = list(first)
    if users and len(users) < len(first):
        shares = accounting.split(total_delta, [weights[i] for i in users])
        for i, d in zip(users, shares, strict=True):
            plans[i] = plan_table(spec.tables[i], eps[i], d, first[i].family)
    plan = ReleasePlan(spec, tuple(plans))
    if plan.epsilon > Fraction(spec.budget.epsilon) or plan.delta > Fraction(spec.budget.delta):
        raise InternalError("the plan spends more than the declared budget")
    return plan
