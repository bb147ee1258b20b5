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

A budget stated as ``rho`` is split over tables by weight and inside a table over its measurements;
a Laplace measurement at epsilon costs ``epsilon^2 / 2`` of it. :class:`ReleaseCost` states what a
release spends in both currencies, for the manifest and the ledger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import partial
from typing import Any, Literal, TypeVar

from dp_ops import accounting, accuracy, continual, selection
from dp_ops.errors import InternalError, NoiseRangeError
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
from pipelines.spec import (
    CATEGORY_KINDS,
    HISTOGRAM_KINDS,
    SPREAD_KINDS,
    BudgetSpec,
    MetricSpec,
    PrivatePartitions,
    PublicPartitions,
    ReleaseSpec,
    TableSpec,
)

Family = Literal["laplace", "gaussian"]
FAMILIES: tuple[Family, ...] = ("laplace", "gaussian")
_T = TypeVar("_T")


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

    def clamping_shift(self, count: int) -> tuple[float, bool]:
        """(E[released] - count for a cell of true value ``count`` once clamped at zero, exact?)."""
        if self.mechanism == "discrete_laplace":
            return accuracy.discrete_laplace_clamping_shift(self.parameter, count), True
        return accuracy.discrete_gaussian_clamping_shift(self.parameter, count)

    def coverage(self, h: int) -> tuple[float, bool]:
        """(P(|noise| <= h), exact?): what an interval of half-width h steps attains; a whole
        number of steps overshoots the level asked (by much when the noise is small)."""
        if self.mechanism == "discrete_laplace":
            return accuracy.discrete_laplace_coverage(self.parameter, h), True
        return accuracy.discrete_gaussian_coverage(self.parameter, h)


@dataclass(frozen=True)
class TruncatedGeometric:
    """Keep probabilities p(n), n = 0..len-1, as 128-bit fractions; p = 1 beyond the table."""

    hi: tuple[int, ...]
    lo: tuple[int, ...]

    def keep_probability(self, n: int) -> float:
        if n >= len(self.hi):
            return 1.0
        return (self.hi[n] * 2.0**64 + self.lo[n]) / 2.0**128


@dataclass(frozen=True)
class SelectionPlan:
    strategy: str
    """post_aggregation, laplace, gaussian or truncated_geometric."""
    threshold: int
    """Thresholding: keep iff n >= pre_threshold and (n - pre_threshold + 1) + noise >= threshold.
    For post_aggregation the noise is the released privacy_unit_count's own."""
    pre_threshold: int
    epsilon: Fraction
    """Epsilon spent by selection alone (0 for post_aggregation: it is inside the unit count's)."""
    delta: Fraction
    noise: NoiseParams | None = None
    """Noise of the separate selection count (laplace, gaussian)."""
    table: TruncatedGeometric | None = None
    carrier: str | None = None
    """post_aggregation: the released unit count whose noisy value is thresholded."""

    def keep_probability(self, n: int, units_noise: NoiseParams | None = None) -> float:
        """P(a partition with n distinct units is released): for reports and tests."""
        if n < self.pre_threshold:
            return 0.0
        if self.table is not None:
            return self.table.keep_probability(n)
        noise = self.noise or units_noise
        if noise is None:
            raise InternalError("post_aggregation selection needs the unit count's noise")
        k = self.threshold - (n - self.pre_threshold + 1)  # released iff Z >= k
        return noise_tail(noise, k)

    def units_for_even_odds(self, units_noise: NoiseParams | None = None) -> int:
        """Smallest number of units with a keep probability of at least 1/2."""
        return self.units_for_probability(0.5, units_noise)

    def units_for_probability(self, p: float, units_noise: NoiseParams | None = None) -> int:
        """Smallest number of units with a keep probability of at least ``p`` (0 < p < 1; the
        probability grows with n: an exponential search, then bisection)."""
        if not 0 < p < 1:
            raise InternalError(f"keep probability {p} is not inside (0, 1)")

        def reaches(n: int) -> bool:
            return self.keep_probability(n, units_noise) >= p

        lo, hi = self.pre_threshold - 1, self.pre_threshold  # reaches(lo) is False
        while not reaches(hi):
            lo, hi = hi, hi + 2 * (hi - lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
        return hi


def noise_tail(noise: NoiseParams, k: int) -> float:
    """P(Z >= k) for the noise (an upper bound for the discrete Gaussian's upper tail)."""
    if noise.mechanism == "discrete_laplace":
        if k >= 1:
            return selection.discrete_laplace_tail(noise.parameter, k)
        return 1 - selection.discrete_laplace_tail(noise.parameter, 1 - k)
    if k >= 0:
        return min(1.0, selection.discrete_gaussian_tail_bound(noise.parameter, k))
    return 1 - min(1.0, selection.discrete_gaussian_tail_bound(noise.parameter, 1 - k))


@dataclass(frozen=True)
class TablePlan:
    table: TableSpec
    epsilon: Fraction
    """(epsilon, delta) given to the table (0 when it was planned in rho)."""
    delta: Fraction
    family: Family
    measurements: tuple[NoiseParams, ...]
    values: tuple[ValueColumn, ...]
    selection: SelectionPlan | None
    rho: Fraction | None = None
    """rho given to the table when the release budget is stated in rho."""
    output_shares: tuple[Fraction, ...] = ()
    """Share of the measurement budget per output, coarsest level first (see output_shares)."""
    detail_error_growth: float | None = None
    """With levels: see detail_error_growth."""
    auto_epsilon: Fraction = Fraction(0)
    """Epsilon of the bounds the release chooses itself (pure, the exponential mechanism), all
    of them together; part of ``epsilon`` (or, in rho, ``auto_epsilon^2 / 2`` of ``rho``)."""
    choice_epsilon: Fraction = Fraction(0)
    """Epsilon of the table's modes and top-ks (pure, the exponential mechanism), all of them
    together, split equally; part of ``epsilon`` (or, in rho, ``choice_epsilon^2 / 2``)."""

    def cell_epsilon(self, metric: MetricSpec) -> Fraction:
        """A mode's or top-k's epsilon in one cell: its share over the cells a unit reaches."""
        n = len(categoricals(self.table))
        return self.choice_epsilon / n / self.table.bounds.max_partitions

    @property
    def zcdp_cost(self) -> Fraction | None:
        """rho-zCDP of the table's mechanisms; None when selection spends delta (not zCDP)."""
        if self.selection is not None:
            return None
        measured = sum((m.rho + m.epsilon * m.epsilon / 2 for m in self.measurements), Fraction(0))
        pure = self.auto_epsilon * self.auto_epsilon + self.choice_epsilon * self.choice_epsilon
        return measured + pure / 2

    @property
    def units_noise(self) -> NoiseParams | None:
        """Noise of the measured count of distinct units (TableSpec.unit_count_measure)."""
        column = self.table.unit_count_measure
        return next((m for m in self.measurements if m.column == column), None)

    @property
    def measurement_epsilon(self) -> Fraction:
        chosen = self.auto_epsilon + self.choice_epsilon
        return self.epsilon - (self.selection.epsilon if self.selection else 0) - chosen

    @property
    def measurement_delta(self) -> Fraction:
        return self.delta - (self.selection.delta if self.selection else 0)

    def noise_for(self, column: str) -> NoiseParams:
        for m in self.measurements:
            if m.column == column:
                return m
        raise InternalError(f"no measurement planned for column {column!r}")

    def squares_of(self, column: str) -> Squares:
        """The sum-of-squares measurement of the value column ``column`` (variance, stddev)."""
        for s in squares(self.table, self.values):
            if s.value.column == column:
                return s
        raise InternalError(f"no squares planned for column {column!r}")


@dataclass(frozen=True)
class ReleaseCost:
    """What a release spends, in the currencies it can be charged in.

    ``epsilon``/``delta``: its (epsilon, delta)-DP guarantee (None for a rho budget without a
    conversion delta); ``rho``: its rho-zCDP guarantee (None when private selection spends delta).
    """

    epsilon: Fraction | None
    delta: Fraction
    rho: Fraction | None


@dataclass(frozen=True)
class ReleasePlan:
    spec: ReleaseSpec
    tables: tuple[TablePlan, ...]

    @property
    def cost(self) -> ReleaseCost:
        """What the release spends; for a series, its whole tree over every period
        (:func:`series_factor`: ``K`` times a node, exact in epsilon for Laplace noise and in
        rho for Gaussian; a pure epsilon-DP series is also epsilon^2 / 2 zCDP)."""
        costs = [t.zcdp_cost for t in self.tables]
        known = [c for c in costs if c is not None]
        rho = sum(known, Fraction(0)) if len(known) == len(costs) else None
        budget = self.spec.budget
        k = 1
        if self.spec.series is not None:
            family, k = series_factor(self.spec)
            if family == "laplace":
                epsilon = self.epsilon * k
                if budget.epsilon is None or epsilon > Fraction(budget.epsilon):
                    raise InternalError("a series plan spends more than its epsilon")
                return ReleaseCost(epsilon, Fraction(0), epsilon * epsilon / 2)
        if budget.rho is None:
            return ReleaseCost(self.epsilon, self.delta, rho)
        if rho is None or rho * k > Fraction(budget.rho):
            raise InternalError("a rho plan must spend at most its rho")
        rho *= k
        if budget.delta == 0:
            return ReleaseCost(None, Fraction(0), rho)
        eps = Fraction(accounting.zcdp_epsilon(float(rho), float(budget.delta)))
        return ReleaseCost(eps, Fraction(budget.delta), rho)

    @property
    def epsilon(self) -> Fraction:
        return sum((t.epsilon for t in self.tables), Fraction(0))

    @property
    def delta(self) -> Fraction:
        return sum((t.delta for t in self.tables), Fraction(0))


def measures_count(table: TableSpec) -> bool:
    return any(m.kind in ("count", "mean", "proportion", *SPREAD_KINDS) for m in table.metrics)


SQUARE_STEPS = 1 << 20
"""Squares of centered grid values are measured on a grid of this many steps (see Squares)."""


@dataclass(frozen=True)
class Squares:
    """The sum of squared centered values of a column, for its variance and standard deviation.

    A row's centered grid value ``q - center`` is squared and put on a coarser grid: one step is
    ``max_square / SQUARE_STEPS`` (in squared grid units), so a row adds at most SQUARE_STEPS and
    sums stay far inside 64 bits. Released variance = noisy squares / count - (noisy centered sum
    / count)^2, clamped to [0, (range / 2)^2]: post-processing of three measurements.
    """

    value: ValueColumn
    max_square: int
    """The largest squared centered grid value a row can have."""

    @property
    def measure(self) -> str:
        return f"ss_{self.value.column}"

    @property
    def row_column(self) -> str:
        """Per input row: the squared centered value on the squares grid."""
        return f"_{self.measure}"

    @property
    def step(self) -> float:
        """Squared grid units per step of the squares grid."""
        return max(self.max_square, 1) / SQUARE_STEPS


def centered_grid_bounds(v: ValueColumn) -> tuple[int, int]:
    """The least and greatest centered grid value a row of ``v`` can have."""
    q_lo, q_hi = grid_bounds(v.lower, v.upper, v.granularity)
    return q_lo - v.center, q_hi - v.center


def squares(table: TableSpec, values: tuple[ValueColumn, ...]) -> tuple[Squares, ...]:
    spread = {m.column for m in table.metrics if m.kind in SPREAD_KINDS}
    out = []
    for v in values:
        if v.column in spread:
            lo, hi = centered_grid_bounds(v)
            out.append(Squares(v, max(lo * lo, hi * hi)))
    return tuple(out)


def value_columns(table: TableSpec) -> tuple[ValueColumn, ...]:
    """The value columns of a table, centered when the count is measured anyway."""
    seen: dict[str, ValueColumn] = {}
    for m in table.metrics:
        if m.kind in (*HISTOGRAM_KINDS, *CATEGORY_KINDS):
            continue
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
        out.append((v.sum_name, sum_sensitivity(l0, linf, *centered_grid_bounds(v)), v.granularity))
    for sq in squares(table, values):  # a row adds 0 .. SQUARE_STEPS
        out.append((sq.measure, sum_sensitivity(l0, linf, 0, SQUARE_STEPS), 1.0))
    for h in histograms(table):  # one measurement per histogram, over all of its bins
        out.append((h.measure, count_sensitivity(l0, linf), 1.0))
    for column in coarse_measurements(table):  # coarser tables of the same bounded rows
        # a unit's (at most l0 * linf) rows may all fall in one coarser cell
        if column.startswith(f"{COUNT}@"):
            out.append((column, count_sensitivity(1, l0 * linf), 1.0))
        else:  # levels and suites require l0 = 1 for the unit count: one cell per unit
            out.append((column, unit_count_sensitivity(1), 1.0))
    return out


def coarse_measurements(table: TableSpec) -> dict[str, int]:
    """The measurements of a table's coarser outputs (levels, or a suite's other tables), each
    with the index of its output in ``table.outputs``."""
    kinds = {m.kind for m in table.metrics}
    columns = [c for c in (COUNT, UNITS) if (c == COUNT and measures_count(table)) or c in kinds]
    if table.geography:
        pairs = table.suite_measurements[:-1]
        return {suite_column(c, g, q): i for i, (g, q) in enumerate(pairs) for c in columns}
    return {level_column(c, i): i for i in range(len(table.levels)) for c in columns}


def suite_column(column: str, geo: int, query: int) -> str:
    """Name of the measurement of ``column`` by a suite's query ``query`` at geographic level
    ``geo`` (the finest level's detailed table is the table's own: ``column``)."""
    return f"{column}@{geo}_{query}"


@dataclass(frozen=True)
class Histogram:
    """A histogram (or the grid of a quantile metric) measured as one vector of bin counts.

    A unit's rows in a cell fall in at most ``max_rows_per_partition`` bins, at most that many
    in all: the bin counts together have the sensitivity of one count.
    """

    metric: MetricSpec
    index: int
    """Position among the table's histograms (names the measurement)."""

    @property
    def measure(self) -> str:
        return f"h{self.index}_{self.metric.column}"

    @property
    def bin_column(self) -> str:
        """Per input row: the bin index of the (clamped) value."""
        return f"_bin{self.index}"

    @property
    def bins(self) -> int:
        return len(self.metric.edges) - 1

    def count_column(self, i: int) -> str:
        return f"{self.measure}_{i}"


@dataclass(frozen=True)
class Categorical:
    """A mode or top-k: the cell's count of rows in each public category, measured exactly and
    turned into the categories named by the exponential mechanism (dp_ops.top_k), never noised
    or released as counts."""

    metric: MetricSpec
    index: int
    """Position among the table's categorical metrics (names its columns)."""

    @property
    def bin_column(self) -> str:
        """Per input row: the index of its category (null for a value in none)."""
        return f"_cat{self.index}"

    def count_column(self, i: int) -> str:
        """Rows in category ``i``; after the mechanism the first k hold the chosen indices."""
        return f"c{self.index}_{self.metric.column}_{i}"

    @property
    def count_columns(self) -> list[str]:
        return [self.count_column(i) for i in range(len(self.metric.categories))]


def categoricals(table: TableSpec) -> tuple[Categorical, ...]:
    cats = [m for m in table.metrics if m.kind in CATEGORY_KINDS]
    return tuple(Categorical(m, j) for j, m in enumerate(cats))


def histograms(table: TableSpec) -> tuple[Histogram, ...]:
    hist = [m for m in table.metrics if m.kind in HISTOGRAM_KINDS]
    return tuple(Histogram(m, j) for j, m in enumerate(hist))


def level_column(column: str, level: int) -> str:
    """Name of the measurement of ``column`` at coarser level ``level`` of a table."""
    return f"{column}@{level}"


def error_columns(metric: str) -> tuple[str, str]:
    """Per-cell error columns of a consistent metric: standard deviation, interval half-width."""
    return f"{metric}_sd", f"{metric}_halfwidth"


def _laplace(
    sens: list[tuple[str, Sensitivity, float]], epsilons: list[Fraction]
) -> tuple[NoiseParams, ...]:
    return tuple(
        NoiseParams(c, "discrete_laplace", laplace_scale(s.l1, e), s, e, Fraction(0), unit)
        for (c, s, unit), e in zip(sens, epsilons, strict=True)
    )


def _gaussian(
    sens: list[tuple[str, Sensitivity, float]], rhos: list[Fraction]
) -> tuple[NoiseParams, ...]:
    return tuple(
        NoiseParams(
            c, "discrete_gaussian", gaussian_variance(s.l2_squared, r), s, Fraction(0), r, unit
        )
        for (c, s, unit), r in zip(sens, rhos, strict=True)
    )


def _measurements(
    family: Family,
    sens: list[tuple[str, Sensitivity, float]],
    weights: list[Fraction],
    epsilon: Fraction,
    delta: Fraction,
) -> tuple[NoiseParams, ...]:
    """Noise for each measurement; epsilon (Laplace) or rho (Gaussian) split by ``weights``."""
    if family == "laplace":
        return _laplace(sens, accounting.split(epsilon, weights))
    return _gaussian(
        sens, accounting.split(accounting.zcdp_rho(float(epsilon), float(delta)), weights)
    )


def plan_table_zcdp(table: TableSpec, rho: Fraction, family: Family) -> TablePlan:
    """Plan a public-partition table at ``rho``-zCDP: Gaussian measurements share rho; Laplace
    measurements get the largest epsilon with ``epsilon^2 / 2`` within their share. Bounds the
    release chooses itself get ``auto_share`` of rho, and modes and top-ks their share of the
    rest (:func:`_choice_share`), each as the largest epsilon within it."""
    auto_rho = rho * _auto_share(table) if table.auto_bounds else Fraction(0)
    choice_rho = (rho - auto_rho) * _choice_share(table)
    if not auto_rho and not choice_rho:
        return _plan_table_zcdp(table, rho, family)
    plan = _plan_table_zcdp(table, rho - auto_rho - choice_rho, family)
    return replace(
        plan,
        rho=rho,
        auto_epsilon=accounting.epsilon_for_rho(auto_rho) if auto_rho else Fraction(0),
        choice_epsilon=accounting.epsilon_for_rho(choice_rho) if choice_rho else Fraction(0),
    )


def _auto_share(table: TableSpec) -> Fraction:
    """The share of a table's budget its chosen bounds spend, as an exact fraction."""
    return Fraction(table.auto_share).limit_denominator(10**6)


def _choice_share(table: TableSpec) -> Fraction:
    """The share of a table's budget (after chosen bounds) its modes and top-ks spend: weight 1
    each, beside weight 1 for each noised measurement (and the selection's weight)."""
    n = len(categoricals(table))
    if not n:
        return Fraction(0)
    measured = Fraction(len(_sensitivities(table, value_columns(table))))
    if isinstance(table.partitions, PrivatePartitions):
        measured += Fraction(table.partitions.weight).limit_denominator(10**6)
    return Fraction(n) / (n + measured)


def _plan_table_zcdp(table: TableSpec, rho: Fraction, family: Family) -> TablePlan:
    if isinstance(table.partitions, PrivatePartitions):
        raise InternalError("private selection under a rho budget passed validation")
    values = value_columns(table)
    sens = _sensitivities(table, values)

    def measure(
        s: list[tuple[str, Sensitivity, float]], weights: list[Fraction]
    ) -> tuple[NoiseParams, ...]:
        shares = accounting.split(rho, weights)
        if family == "gaussian":
            return _gaussian(s, shares)
        return _laplace(s, [accounting.epsilon_for_rho(r) for r in shares])

    weights = level_weights(table, sens, measure)
    measurements = measure(sens, weights)
    return TablePlan(
        table,
        Fraction(0),
        Fraction(0),
        family,
        measurements,
        values,
        None,
        rho=rho,
        output_shares=output_shares(table, sens, weights),
        detail_error_growth=detail_error_growth(table, sens, weights, measure),
    )


ROUNDING_VARIANCE = Fraction(1, 4)
"""The most rounding to whole persons adds to a consistent count's mean square error (children
of a parent share one fractional adjustment f and move by f(1 - f) in mean square)."""

Measure = Callable[[list[tuple[str, Sensitivity, float]], list[Fraction]], tuple[NoiseParams, ...]]
"""Noise for measurements (sensitivities) sharing a table's budget by weights."""


def level_weights(
    table: TableSpec, sens: list[tuple[str, Sensitivity, float]], measure: Measure
) -> list[Fraction]:
    """Budget weights of a table's measurements (all equal for a table without levels).

    With ``level_weights``, a level's measurements get its entry and the table's own the last one.
    Without, the table's own measurements get the smallest share ``f`` of the budget that keeps
    their released counts' error within ``1 + max_detail_loss`` of their noise with the whole
    budget, and the levels' measurements share ``1 - f`` equally. The released error counts the
    rounding to whole persons (ROUNDING_VARIANCE at most): ``sqrt(sd_f^2 + 1/4) <= (1 + loss)
    sd_1`` for every own measurement, from the samplers' exact standard deviations. When the
    noise is so small that rounding alone breaks that, the noise must stay within half the loss
    (``sd_f <= (1 + loss / 2) sd_1``). Least squares over the levels then only lowers the
    detailed cells' error. ``f`` is found by bisection to within 10^-6 (rounded up).
    """
    if not table.consistent:
        return [Fraction(1)] * len(sens)
    coarse = coarse_measurements(table)
    if table.level_weights:
        w = [Fraction(x) for x in table.level_weights]
        return [w[coarse[c]] if c in coarse else w[-1] for c, _, _ in sens]
    own = [c for c, _, _ in sens if c not in coarse]
    whole = _alone_sds(table, sens, measure)

    def weights(f: Fraction) -> list[Fraction]:
        each_level = len(own) * (1 - f) / f / (len(sens) - len(own))
        return [each_level if c in coarse else Fraction(1) for c, _, _ in sens]

    def keeps(f: Fraction, rounding: float, allowed: float) -> bool:
        return _growth(sens, weights(f), measure, whole, rounding) <= allowed

    rounding, allowed = float(ROUNDING_VARIANCE), 1 + table.max_detail_loss
    if not keeps(Fraction(999_999, 1_000_000), rounding, allowed):
        rounding, allowed = 0.0, 1 + table.max_detail_loss / 2
    lo, hi = Fraction(0), Fraction(999_999, 1_000_000)  # keeps(hi) holds, keeps(lo) does not
    while hi - lo > Fraction(1, 10**6):
        mid = Fraction(math.floor((lo + hi) / 2 * 10**7), 10**7)
        if mid <= lo:
            break
        lo, hi = (lo, mid) if keeps(mid, rounding, allowed) else (mid, hi)
    return weights(hi)


def _alone_sds(
    table: TableSpec, sens: list[tuple[str, Sensitivity, float]], measure: Measure
) -> dict[str, float]:
    """The noise standard deviation of each of the table's own measurements had the table no
    coarser outputs (its whole budget on them)."""
    coarse = coarse_measurements(table)
    own = [m for m in sens if m[0] not in coarse]
    return {m.column: m.sd()[0] for m in measure(own, [Fraction(1)] * len(own))}


def _growth(
    sens: list[tuple[str, Sensitivity, float]],
    weights: list[Fraction],
    measure: Measure,
    whole: dict[str, float],
    rounding: float,
) -> float:
    """The largest ``sqrt(sd^2 + rounding) / sd_alone`` over the table's own measurements."""
    return max(
        math.sqrt(m.sd()[0] ** 2 + rounding) / whole[m.column]
        for m in measure(sens, weights)
        if m.column in whole
    )


def detail_error_growth(
    table: TableSpec,
    sens: list[tuple[str, Sensitivity, float]],
    weights: list[Fraction],
    measure: Measure,
) -> float | None:
    """For a table with levels: the most a detailed cell's released error (its noise, plus what
    rounding to whole persons can add) exceeds its noise had the table no levels, as a ratio of
    standard deviations; before least squares, which only lowers it. None without levels."""
    if not table.consistent:
        return None
    whole = _alone_sds(table, sens, measure)
    return _growth(sens, weights, measure, whole, float(ROUNDING_VARIANCE))


def output_shares(
    table: TableSpec, sens: list[tuple[str, Sensitivity, float]], weights: list[Fraction]
) -> tuple[Fraction, ...]:
    """Each output's share of the table's measurement budget, coarsest level first, the table
    itself last (one entry for a table without levels)."""
    total = sum(weights, Fraction(0))
    coarse = coarse_measurements(table)
    shares = [Fraction(0)] * len(table.outputs)
    for (column, _, _), w in zip(sens, weights, strict=True):
        shares[coarse.get(column, len(shares) - 1)] += w / total
    return tuple(shares)


def _threshold(noise: NoiseParams, delta: Fraction, l0: int) -> int:
    d = selection.adjusted_delta(float(delta), l0)
    if noise.mechanism == "discrete_laplace":
        return selection.discrete_laplace_threshold(noise.parameter, d)
    return selection.discrete_gaussian_threshold(noise.parameter, d)


def _separate_selection(
    strategy: str, p: PrivatePartitions, l0: int, eps: Fraction, delta: Fraction
) -> SelectionPlan:
    """Selection with its own budget (eps, delta): Laplace, Gaussian or truncated geometric."""
    sens = unit_count_sensitivity(l0)
    if strategy == "truncated_geometric":
        probs = selection.truncated_geometric_probabilities(
            float(eps), float(delta), l0, p.pre_threshold
        )
        hi, lo = selection.fixed_point_128(probs)
        table = TruncatedGeometric(tuple(int(x) for x in hi), tuple(int(x) for x in lo))
        return SelectionPlan(strategy, 1, p.pre_threshold, eps, delta, table=table)
    if strategy == "laplace":
        noise = NoiseParams(
            "_select", "discrete_laplace", laplace_scale(sens.l1, eps), sens, eps, Fraction(0)
        )
        return SelectionPlan(
            strategy, _threshold(noise, delta, l0), p.pre_threshold, eps, delta, noise
        )
    delta_noise = delta / 2
    rho = accounting.zcdp_rho(float(eps), float(delta_noise))
    noise = NoiseParams(
        "_select", "discrete_gaussian", gaussian_variance(sens.l2_squared, rho), sens, eps, rho
    )
    threshold = _threshold(noise, delta - delta_noise, l0)
    return SelectionPlan(strategy, threshold, p.pre_threshold, eps, delta, noise)


def plan_table(
    table: TableSpec,
    epsilon: Fraction,
    delta: Fraction,
    family: Family,
    strategy: str | None = None,
) -> TablePlan:
    """Plan one table at (epsilon, delta) with the given noise family and selection strategy.
    Bounds the release chooses itself get ``auto_share`` of epsilon, modes and top-ks their
    share of the rest (:func:`_choice_share`)."""
    auto = epsilon * _auto_share(table) if table.auto_bounds else Fraction(0)
    choice = (epsilon - auto) * _choice_share(table)
    if not auto and not choice:
        return _plan_table(table, epsilon, delta, family, strategy)
    plan = _plan_table(table, epsilon - auto - choice, delta, family, strategy)
    return replace(plan, epsilon=epsilon, auto_epsilon=auto, choice_epsilon=choice)


def _plan_table(
    table: TableSpec,
    epsilon: Fraction,
    delta: Fraction,
    family: Family,
    strategy: str | None = None,
) -> TablePlan:
    values = value_columns(table)
    sens = _sensitivities(table, values)
    chosen = table.partitions if isinstance(table.partitions, PrivatePartitions) else None
    if chosen is None:
        spent_delta = delta if family == "gaussian" else Fraction(0)
        measure = partial(_measurements, family, epsilon=epsilon, delta=spent_delta)
        weights = level_weights(table, sens, measure)
        measurements = measure(sens, weights=weights)
        return TablePlan(
            table,
            epsilon,
            spent_delta,
            family,
            measurements,
            values,
            None,
            output_shares=output_shares(table, sens, weights),
            detail_error_growth=detail_error_growth(table, sens, weights, measure),
        )
    strategy = strategy or chosen.strategy
    if strategy == "auto":
        return _auto_selection(table, epsilon, delta, family, chosen)
    l0 = table.bounds.max_partitions
    delta_sel = delta / 2 if family == "gaussian" else delta
    delta_meas = delta - delta_sel
    w_sel = Fraction(chosen.weight)
    if strategy == "post_aggregation":
        # the unit count carries the selection's weight too: one noisy count does both jobs
        carrier = table.unit_count_measure
        if carrier is None:
            raise InternalError("post_aggregation without a unit count passed validation")
        weights = [Fraction(1) + (w_sel if c == carrier else 0) for c, _, _ in sens]
        measurements = _measurements(family, sens, weights, epsilon, delta_meas)
        units = next(m for m in measurements if m.column == carrier)
        threshold = _threshold(units, delta_sel, l0)
        sel = SelectionPlan(
            strategy, threshold, chosen.pre_threshold, Fraction(0), delta_sel, carrier=carrier
        )
        return TablePlan(table, epsilon, delta, family, measurements, values, sel)
    eps_sel, eps_meas = accounting.split(epsilon, [w_sel, len(sens)])
    measurements = _measurements(family, sens, [Fraction(1)] * len(sens), eps_meas, delta_meas)
    sel = _separate_selection(strategy, chosen, l0, eps_sel, delta_sel)
    return TablePlan(table, epsilon, delta, family, measurements, values, sel)


def _auto_selection(
    table: TableSpec, epsilon: Fraction, delta: Fraction, family: Family, p: PrivatePartitions
) -> TablePlan:
    """post_aggregation when the table measures a unit count (TableSpec.unit_count_measure); else
    the strategy that keeps partitions from the fewest units."""
    if table.unit_count_measure is not None:
        return _plan_table(table, epsilon, delta, family, "post_aggregation")
    options = _feasible(
        lambda s: _plan_table(table, epsilon, delta, family, s),
        ("truncated_geometric", "laplace", "gaussian"),
    )
    return min(options, key=lambda t: t.selection.units_for_even_odds() if t.selection else 0)


def _feasible(plan: Callable[[Any], TablePlan], choices: Sequence[Any]) -> list[TablePlan]:
    """The plans of the choices whose noise fits the samplers' range; the first choice's
    NoiseRangeError if none does."""
    plans, errors = [], []
    for choice in choices:
        try:
            plans.append(plan(choice))
        except NoiseRangeError as exc:
            errors.append(exc)
    if not plans:
        raise errors[0]
    return plans


def _in_range(where: str, table: TableSpec, plan: Callable[..., _T], *args: Any) -> _T:
    """``plan(*args)``, with a NoiseRangeError restated for the operator: which table, and what
    to change."""
    try:
        return plan(*args)
    except NoiseRangeError as exc:
        raise NoiseRangeError(
            f"{where} ({table.name}): the bounds and budget ask for {exc}, beyond the 64-bit "
            "range noise is drawn in; lower bounds.max_partitions, "
            "bounds.max_rows_per_partition or the metrics' lower/upper bounds (or coarsen a "
            "sum's granularity), or give the table more budget"
        ) from None


def _relative_variance(plan: TablePlan) -> float:
    return sum(m.sd()[0] ** 2 / m.sensitivity.per_partition**2 for m in plan.measurements)


def _plan_family(table: TableSpec, eps: Fraction, delta: Fraction, noise: str) -> TablePlan:
    if noise == "laplace" or delta == 0:
        return plan_table(table, eps, delta, "laplace")
    if noise == "gaussian":
        return plan_table(table, eps, delta, "gaussian")
    options = _feasible(lambda f: plan_table(table, eps, delta, f), ("laplace", "gaussian"))
    return min(options, key=_relative_variance)


def _plan_zcdp(spec: ReleaseSpec, rho: Fraction) -> ReleasePlan:
    plans = []
    shares = accounting.split(rho, [t.weight for t in spec.tables])
    for i, (table, share) in enumerate(zip(spec.tables, shares, strict=True)):
        families = (spec.noise,) if spec.noise in ("laplace", "gaussian") else FAMILIES
        options = _in_range(
            f"tables[{i}]", table, _feasible, partial(plan_table_zcdp, table, share), families
        )
        plans.append(min(options, key=_relative_variance))
    plan = ReleasePlan(spec, tuple(plans))
    cost = plan.cost.rho
    if cost is None or cost > rho:
        raise InternalError("the plan spends more than the declared rho")
    return plan


def series_family(spec: ReleaseSpec) -> Family:
    """A series' noise family: Laplace for an epsilon budget, Gaussian for rho."""
    return "gaussian" if spec.budget.rho is not None else "laplace"


def series_depth(spec: ReleaseSpec) -> int:
    """The levels of a series' tree: ``series.tree_levels``, or the most accurate
    (:func:`dp_ops.continual.best_depth`)."""
    s = spec.series
    if s is None:
        raise InternalError("series_depth of a spec without a series")
    if s.tree_levels is not None:
        return s.tree_levels
    return continual.best_depth(s.horizon, s.max_periods, series_family(spec))


def series_factor(spec: ReleaseSpec) -> tuple[Family, int]:
    """A series' noise family and ``K``: its tree spends ``K`` times what one node spends
    (:func:`dp_ops.continual.budget_factor`)."""
    s = spec.series
    if s is None:
        raise InternalError("series_factor of a spec without a series")
    family = series_family(spec)
    return family, continual.budget_factor(s.horizon, s.max_periods, family, series_depth(spec))


def node_spec(spec: ReleaseSpec) -> ReleaseSpec:
    """For a series: the spec of one node of its tree, a one-period release at the series'
    budget / ``K`` with the series' noise family (:func:`series_factor`), no series."""
    family, k = series_factor(spec)
    b = spec.budget
    if b.rho is not None:
        scaled = BudgetSpec(rho=Fraction(b.rho) / k)
    elif b.epsilon is not None:
        scaled = BudgetSpec(epsilon=Fraction(b.epsilon) / k)
    else:
        raise InternalError("a budget without epsilon or rho passed validation")
    return replace(spec, budget=scaled, noise=family, series=None)


def plan_release(spec: ReleaseSpec) -> ReleasePlan:
    """Split the budget and choose every mechanism; checks the plan never overspends.

    Epsilon goes to tables by weight. Delta goes by weight to the tables that use it (private
    selection or Gaussian noise): a first pass chooses each table's family with a provisional
    share of delta, a second hands the tables that use delta the whole of it.

    For a series, the plan of every node of its tree (:func:`node_spec`): its ``spec`` has the
    node's budget, and :func:`pipelines.series.plan_series` what the whole series spends.
    """
    if spec.series is not None:  # the plan of a node, stated for the series' spec
        return ReleasePlan(spec, _plan_budget(node_spec(spec)).tables)
    return _plan_budget(spec)


def _plan_budget(spec: ReleaseSpec) -> ReleasePlan:
    if spec.budget.rho is not None:
        return _plan_zcdp(spec, Fraction(spec.budget.rho))
    if spec.budget.epsilon is None:
        raise InternalError("a budget without epsilon or rho passed validation")
    weights = [t.weight for t in spec.tables]
    eps = accounting.split(Fraction(spec.budget.epsilon), weights)
    total_delta = Fraction(spec.budget.delta)
    zero = [Fraction(0)] * len(weights)
    dels = accounting.split(total_delta, weights) if total_delta > 0 else zero
    first = [
        _in_range(f"tables[{i}]", t, _plan_family, t, e, d, spec.noise)
        for i, (t, e, d) in enumerate(zip(spec.tables, eps, dels, strict=True))
    ]
    users = [i for i, p in enumerate(first) if p.delta > 0]
    plans = list(first)
    if users and len(users) < len(first):
        shares = accounting.split(total_delta, [weights[i] for i in users])
        for i, d in zip(users, shares, strict=True):
            t = spec.tables[i]
            plans[i] = _in_range(f"tables[{i}]", t, plan_table, t, eps[i], d, first[i].family)
    plan = ReleasePlan(spec, tuple(plans))
    if plan.epsilon > Fraction(spec.budget.epsilon) or plan.delta > Fraction(spec.budget.delta):
        raise InternalError("the plan spends more than the declared budget")
    return plan


def declared_cell_count(spec: ReleaseSpec, table: TableSpec) -> int | None:
    """How many cells ``table`` can have, when the spec alone says (public keys listed or a cross
    product of declared domains, or private selection over declared domains); else None. A
    suite's keys list its finest geographic units, each with every attribute cell."""
    p = table.partitions
    if isinstance(p, PublicPartitions) and p.source == "file":
        return None
    listed = (
        table.attributes
        if isinstance(p, PublicPartitions) and p.source == "inline"
        else table.dimensions
    )
    count = len(p.rows) if isinstance(p, PublicPartitions) and p.source == "inline" else 1
    if isinstance(p, PublicPartitions) and p.source == "inline" and not table.geography:
        return count
    for d in listed:
        values = spec.domain(d)
        if values is None:
            return None
        count *= len(values)
    return count


def auto_measures(t: TablePlan) -> set[str]:
    """The measurements whose noise depends on bounds the release chooses itself (all of them,
    when it chooses L0): before it runs, their noise is not known."""
    if t.table.bounds.auto_partitions:
        return {m.column.partition("@")[0] for m in t.measurements}
    auto = {m.column for m in t.table.metrics if m.auto}
    sums = {v.sum_name for v in t.values if v.column in auto}
    return sums | {sq.measure for sq in squares(t.table, t.values) if sq.value.column in auto}


def plan_warnings(plan: ReleasePlan) -> tuple[str, ...]:
    """What makes a planned table say little, from the spec alone (no data is read): bounds that
    no person can reach, and noise far above what one row can add to a cell. Each warning names
    the table, the metric and the bound to change."""
    multiple = plan.spec.output.noise_warning_multiple
    warnings: list[str] = []
    for i, t in enumerate(plan.tables):
        bounds = t.table.bounds
        where = f"tables[{i}] ({t.table.name})"
        cells = declared_cell_count(plan.spec, t.table)
        if cells is not None and bounds.max_partitions > cells:
            warnings.append(
                f"{where}: bounds.max_partitions is {bounds.max_partitions}, but the table has "
                f"at most {cells} cells; lower it to {cells}: that drops no data and cuts the "
                "noise of every cell"
            )
        unknown = auto_measures(t)  # chosen at run time: not warned about before
        for m in t.measurements:
            if m.column.partition("@")[0] in unknown:
                continue
            one_row = max(1, m.sensitivity.per_partition // bounds.max_rows_per_partition)
            sd = m.sd()[0]
            if sd <= multiple * one_row:
                continue
            larger = max(
                ("bounds.max_partitions", bounds.max_partitions),
                ("bounds.max_rows_per_partition", bounds.max_rows_per_partition),
                key=lambda kv: kv[1],
            )
            fix = f"lower {larger[0]} ({larger[1]})" if larger[1] > 1 else "raise the budget"
            warnings.append(
                f"{where}: the noise of {m.column} has standard deviation {sd * m.unit:.4g}, "
                f"over {multiple:g} times the most one row adds to a cell "
                f"({one_row * m.unit:.4g}); cells smaller than that are lost in the noise. "
                f"To fix it, {fix}, or set output.noise_warning_multiple to accept it"
            )
    return tuple(warnings)
