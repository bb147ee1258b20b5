"""The release specification: frozen, typed, validated objects built from a plain mapping.

``parse_spec(mapping)`` turns the YAML document (already loaded by :mod:`jobs.config`) into a
:class:`ReleaseSpec`, or raises :class:`~dp_ops.errors.SpecError` naming the offending key, for
example ``tables[1].metrics[0].lower``. Unknown keys are errors too: a typo must not silently
fall back to a default that spends budget differently.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

from dp_ops.errors import SpecError
from dp_ops.fixed_point import MAX_STEPS, default_granularity
from dp_ops.rational import MIN_BUDGET, MIN_DELTA, exact_decimal
from pipelines.periods import KINDS, PeriodKind, ordinal

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,99}$")
MetricKind = Literal["count", "privacy_unit_count", "sum", "mean", "proportion"]
METRIC_KINDS: tuple[str, ...] = (
    "count",
    "privacy_unit_count",
    "sum",
    "mean",
    "proportion",
    "mode",
    "top_k",
    "variance",
    "stddev",
    "histogram",
    "quantiles",
)
SPREAD_KINDS = ("variance", "stddev")
HISTOGRAM_KINDS = ("histogram", "quantiles")
CATEGORY_KINDS = ("mode", "top_k")
"""Metrics that name a cell's most common categories (dp_ops.top_k)."""
MAX_CATEGORIES = 1000
NoiseFamily = Literal["auto", "laplace", "gaussian"]


ExpectationKind = Literal["not_null", "in_set", "between"]


@dataclass(frozen=True)
class ExpectationSpec:
    """An extra expectation on the input, beyond those the spec implies.

    ``in_set`` and ``between`` pass null values (add ``not_null`` to forbid them). Rows that fail
    are invalid: the release fails or quarantines them (``input.on_invalid``). Excluding rows by a
    rule of their own values costs no privacy, but changes what the tables describe.
    """

    column: str
    kind: ExpectationKind
    values: tuple[Any, ...] = ()
    """Allowed values (``in_set``)."""
    min_value: float | None = None
    max_value: float | None = None
    """Inclusive bounds (``between``); either may be omitted."""


@dataclass(frozen=True)
class RandomizedResponse:
    """A survey question answered by randomized response: each respondent answers truthfully
    with probability ``p_truth``, and otherwise reports a coin flip that says yes (1) with
    probability ``p_yes``. The column holds the reported answers (0 or 1)."""

    column: str
    p_truth: Fraction
    """More truth: a smaller standard error, a larger local epsilon."""
    p_yes: Fraction

    @property
    def yes_offset(self) -> Fraction:
        """P(yes) of a respondent whose true answer is no: ``(1 - p_truth) * p_yes``."""
        return (1 - self.p_truth) * self.p_yes

    @property
    def local_epsilon(self) -> float:
        """The epsilon each respondent's reported answer has on its own (local DP), whatever
        is done with it: the largest log ratio of a report's probability under the two truths."""
        yes1, yes0 = self.p_truth + self.yes_offset, self.yes_offset
        no1, no0 = 1 - yes1, 1 - yes0
        return max(math.log(yes1 / yes0), math.log(no0 / no1))


@dataclass(frozen=True)
class InputSpec:
    path: str | None
    """Where the microdata is (a file or a directory of Parquet/CSV files; a local path or a
    Hadoop-compatible URI), or None when ``table`` names it."""
    format: Literal["parquet", "csv"]
    """The files' format (with ``path``; a catalog table has its own)."""
    privacy_unit: str
    """Column identifying a privacy unit (a person). Everything one unit contributes is bounded."""
    csv_header: bool = True
    on_invalid: Literal["fail", "quarantine"] = "fail"
    """``fail``: invalid rows stop the release (exit 3, nothing spent). ``quarantine``: they are
    set aside in a private location and the release goes on with the valid rows."""
    expectations: tuple[ExpectationSpec, ...] = ()
    """Extra expectations, checked with those the spec implies."""
    validator: Literal["great_expectations", "spark"] = "great_expectations"
    """Who gives the verdict on the expectations: ``great_expectations`` (a suite validated by
    great-expectations; a few seconds of import and validation) or ``spark`` (the same rules as
    one Spark aggregation of the predicates that also split off invalid rows; well under a
    second). Either way rows are split and quarantined by those predicates. No privacy cost."""
    table: str | None = None
    """A catalog table instead of ``path`` (``db.persons``, ``catalog.db.persons``), read with
    the session's catalog (Hive metastore, Unity, Glue, Spark's built-in catalog)."""
    randomized_response: tuple[RandomizedResponse, ...] = ()
    """Columns collected by randomized response: their ``proportion`` metrics are the
    design's unbiased estimates, with standard errors and intervals."""

    @property
    def source(self) -> str:
        """What the input is, for messages: ``input.path 'p'`` or ``input.table 'db.t'``."""
        if self.table is not None:
            return f"input.table {self.table!r}"
        return f"input.path {self.path!r}"


_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")
"""A table identifier: ``table``, ``db.table`` or ``catalog.db.table``, unquoted parts."""


@dataclass(frozen=True)
class BudgetSpec:
    """The release's total budget: ``epsilon`` (with ``delta``), or ``rho`` (zCDP).

    * ``epsilon`` alone: pure epsilon-DP (Laplace noise, public partitions only);
    * ``epsilon`` and ``delta``: approximate DP (adds Gaussian noise and private selection);
    * ``rho``: rho-zCDP (Gaussian or Laplace noise, public partitions only). With ``delta`` too,
      the release is also reported, and charged to an (epsilon, delta) ledger, as
      (epsilon(rho, delta), delta)-DP by Canonne-Kamath-Steinke Cor. 13; ``delta`` is then not
      spent by any mechanism.
    """

    epsilon: Fraction | None = None
    """Total epsilon of the release, exactly as written (``0.1`` is 1/10). Noise scales as
    1/epsilon."""
    delta: Fraction = Fraction(0)
    """Total delta (epsilon budgets), or the conversion delta (rho budgets), exactly as written."""
    rho: Fraction | None = None
    """Total rho-zCDP of the release, exactly as written. Gaussian noise scales as
    1/sqrt(rho)."""

    @property
    def is_zcdp(self) -> bool:
        return self.rho is not None


@dataclass(frozen=True)
class BoundsSpec:
    max_partitions: int
    """L0: partitions one unit may contribute to. A unit in more loses random extra partitions;
    noise on every cell grows with L0 (linearly for Laplace, with its square root for Gaussian)."""
    max_rows_per_partition: int
    """Linf: rows one unit may contribute to one partition. Extra rows are dropped at random;
    count and sum noise grow linearly with it."""
    auto_partitions: bool = False
    """``max_partitions: auto``: the release chooses L0 itself, privately, as about the table's
    ``auto_quantile`` of the units' cell counts (a power of two); until then ``max_partitions``
    is a placeholder of 1 (:mod:`pipelines.auto_bounds`)."""


@dataclass(frozen=True)
class MetricSpec:
    kind: str
    column: str | None = None
    lower: float | None = None
    """Public lower clamping bound (never computed from the data); values below are raised to it."""
    upper: float | None = None
    """Public upper clamping bound; sum noise grows with max(|lower|, |upper|)."""
    granularity: float | None = None
    """Fixed-point grid step of sums; values round to it. Coarser: less precision, same privacy."""
    edges: tuple[float, ...] = ()
    """Bin edges of a histogram (public), or of the grid a quantile is read from."""
    probabilities: tuple[float, ...] = ()
    """Quantiles to release (0.5: the median)."""
    categories: tuple[Any, ...] = ()
    """A mode's or top-k's public categories (values of the column); rows with others count in
    none. More categories: a larger lead is needed for the right answer."""
    k: int = 1
    """How many categories a top-k names (1 for a mode); each costs 1/k of the metric's epsilon."""
    design: RandomizedResponse | None = None
    """A proportion of a randomized-response column: its design (set from the input spec)."""
    confidence: float = 0.95
    """A proportion's interval level (set from ``output.confidence``)."""
    auto: tuple[str, ...] = ()
    """What the release chooses itself, privately, before it measures (``lower``, ``upper``;
    ``granularity`` when the spec gives none): until then ``lower``/``upper`` hold placeholders
    and the table's ``auto_bounds`` says how much budget and which quantile
    (:mod:`pipelines.auto_bounds`)."""

    @property
    def output_name(self) -> str:
        return self.kind if self.column is None else f"{self.kind}_{self.column}"

    @property
    def output_names(self) -> tuple[str, ...]:
        """The released columns: one per histogram bin, one per quantile, else one."""
        if self.kind == "histogram":
            return tuple(f"hist_{self.column}_{i}" for i in range(len(self.edges) - 1))
        if self.kind == "quantiles":
            return tuple(
                f"p{format(100 * p, 'g').replace('.', '_')}_{self.column}"
                for p in self.probabilities
            )
        if self.kind == "proportion":
            name = self.output_name
            return (name, f"{name}_se", f"{name}_low", f"{name}_high")
        if self.kind == "top_k":
            return tuple(f"top{i + 1}_{self.column}" for i in range(self.k))
        return (self.output_name,)


@dataclass(frozen=True)
class PublicPartitions:
    source: Literal["cross_product", "inline", "file"]
    rows: tuple[tuple[Any, ...], ...] = ()
    path: str | None = None
    format: Literal["parquet", "csv"] = "csv"


SELECTION_STRATEGIES = ("auto", "post_aggregation", "laplace", "gaussian", "truncated_geometric")


@dataclass(frozen=True)
class PrivatePartitions:
    strategy: str = "auto"
    """How partitions are selected. ``post_aggregation``: a released noisy count of distinct units
    is also the selection statistic, no budget split off (needs ``privacy_unit_count``, or a
    measured row count with ``max_rows_per_partition: 1``, which after bounding is the same
    number: see TableSpec.unit_count_measure); ``laplace`` / ``gaussian``: thresholding of a
    separate noisy count; ``truncated_geometric``: keep with the optimal probability p(n).
    ``auto``: post_aggregation when the table measures a unit count, else whichever keeps
    partitions from the fewest units."""
    pre_threshold: int = 1
    """Partitions with fewer distinct units than this are never released (free of budget)."""
    weight: float = 1.0
    """Share of the table's budget spent on selection, relative to weight 1 for each measurement."""


DEFAULT_DETAIL_LOSS = 0.1
MAX_DETAIL_LOSS = 10.0
MAX_SUITE_CELLS = 1024
"""The most attribute cells per unit in a suite (dp_ops.marginals.MAX_CELLS)."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    dimensions: tuple[str, ...]
    partitions: PublicPartitions | PrivatePartitions
    bounds: BoundsSpec
    metrics: tuple[MetricSpec, ...]
    weight: float = 1.0
    """Share of the release budget for this table, relative to the other tables' weights."""
    levels: tuple[tuple[str, ...], ...] = ()
    """Coarser levels released with the table and made consistent with it, coarsest first, each
    nested in the next (``[[], [state]]`` for a state > county table: the total and the states).
    The table's budget is shared by every level's measurements."""
    level_weights: tuple[float, ...] = ()
    """Relative budget of each level's measurements, coarsest first, the table itself last.
    Empty: the split follows ``max_detail_loss``. More weight on a level: less noise there, more
    everywhere else."""
    geography: tuple[tuple[str, ...], ...] = ()
    """A table suite's geographic levels, coarsest first, each nested in the next; the last is
    the finest geographic unit (``[[], [state], [state, county]]``). The other dimensions are
    the units' attributes. Every unit at every level is measured by the detailed attribute cells
    and by each of ``margins``; least squares over all of them gives every unit's detailed table,
    and every released table is a sum of the finest one."""
    margins: tuple[tuple[str, ...], ...] = ()
    """Marginal queries of a suite, measured per geographic unit at every level besides the
    detailed cells: attribute subsets, nested or not (``[[sex, age_group], [race], []]``; ``[]``
    is the unit's total)."""
    auto_share: float = 0.1
    """With bounds the release chooses (``auto``): the share of the table's budget they spend,
    split equally over them; the measurements get the rest."""
    auto_quantile: float = 0.95
    """With ``upper: auto``: the chosen upper bound is about this quantile of the persons'
    largest values (``lower: auto``: 1 - it of their smallest), within a factor 2."""
    to_date: bool = False
    """Set for the tables of a series: each metric is released also as ``<metric>_to_date``,
    its total over the series' periods so far (:mod:`pipelines.series`)."""
    max_detail_loss: float = DEFAULT_DETAIL_LOSS
    """Without ``level_weights``: how much the released error of the table's own cells (noise,
    plus rounding to whole persons) may exceed their noise with the table's whole budget, as a
    fraction (0.1: 10% more error on the detailed cells). The table's own measurements get the
    smallest share that keeps that promise and the coarser levels share the rest equally: a
    larger value makes the margins more accurate and the detailed cells less."""

    @property
    def unit_count_measure(self) -> str | None:
        """The measurement that counts each cell's distinct privacy units after bounding, if the
        table has one: ``privacy_unit_count``; else ``count`` when rows are measured (count,
        mean, variance, stddev) and ``max_rows_per_partition`` is 1, since each unit then keeps
        at most one row per cell. Post-aggregation selection thresholds its noisy value."""
        kinds = {m.kind for m in self.metrics}
        if "privacy_unit_count" in kinds:
            return "privacy_unit_count"
        rows = {"count", "mean", "proportion", *SPREAD_KINDS}
        if kinds & rows and self.bounds.max_rows_per_partition == 1:
            return "count"
        return None

    @property
    def auto_bounds(self) -> bool:
        """Whether the release chooses some of this table's bounds itself."""
        return self.bounds.auto_partitions or any(m.auto for m in self.metrics)

    @property
    def consistent(self) -> bool:
        """Released with coarser tables that add up with it: levels, or a suite."""
        return bool(self.levels or self.geography)

    @property
    def attributes(self) -> tuple[str, ...]:
        """A suite's attribute dimensions: those not in its finest geographic level."""
        geo = set(self.geography[-1]) if self.geography else set()
        return tuple(d for d in self.dimensions if d not in geo)

    @property
    def key_dimensions(self) -> tuple[str, ...]:
        """The dimensions a list or file of public keys gives: a suite's finest geographic
        level (its attributes come from the declared domains), else all of them."""
        return self.geography[-1] if self.geography else self.dimensions

    @property
    def suite_queries(self) -> tuple[tuple[str, ...], ...]:
        """A suite's queries per unit: the detailed attribute cells first, then the margins."""
        return (self.attributes, *self.margins)

    @property
    def suite_measurements(self) -> tuple[tuple[int, int], ...]:
        """(geographic level, query) of every output of a suite, coarsest first, the finest
        detailed table (the table's own) last."""
        last = len(self.geography) - 1
        pairs = [
            (g, q)
            for g in range(len(self.geography))
            for q in (*range(1, len(self.suite_queries)), 0)
        ]
        return (*[x for x in pairs if x != (last, 0)], (last, 0))

    def suite_dimensions(self, geo: int, query: int) -> tuple[str, ...]:
        """The dimensions of a suite's output: the level's geography and the query's attributes,
        in the table's order."""
        keep = {*self.geography[geo], *self.suite_queries[query]}
        return tuple(d for d in self.dimensions if d in keep)

    def level_name(self, level: Sequence[str]) -> str:
        """Output name of a coarser level: ``<name>__total`` or ``<name>__by_<dims>``."""
        return f"{self.name}__{'by_' + '_'.join(level) if level else 'total'}"

    @property
    def outputs(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(output name, dimensions) of every table this one writes, coarsest first."""
        if self.geography:
            dims = [self.suite_dimensions(g, q) for g, q in self.suite_measurements]
            return (*((self.level_name(d), d) for d in dims[:-1]), (self.name, self.dimensions))
        coarse = tuple((self.level_name(lv), lv) for lv in self.levels)
        return (*coarse, (self.name, self.dimensions))


@dataclass(frozen=True)
class OutputSpec:
    path: str
    format: Literal["parquet", "csv"] = "parquet"
    confidence: float = 0.95
    """Confidence level of the interval half-widths written to the manifest."""
    nonnegative_counts: bool = True
    """Clamp released counts at zero (post-processing: free, but biases small cells upwards)."""
    noise_warning_multiple: float = 1000.0
    """The plan warns when a metric's noise standard deviation exceeds this multiple of the most
    one row can add to a cell (1 for counts, the larger of |lower| and |upper| for sums): such
    a table says little about any cell below that size. A warning only: nothing is refused."""
    catalog_database: str | None = None
    """Register each released table in this catalog database (``db`` or ``catalog.db``) once the
    release is committed, as an external table over its files pointing at the newest release;
    the manifest stays the authority."""


@dataclass(frozen=True)
class LedgerSpec:
    dataset: str
    """The dataset whose lifetime budget this release is charged against."""
    path: str
    """The ledger file (SQLite); every release of the dataset must use the same file."""


@dataclass(frozen=True)
class SeriesSpec:
    """A release series: one release per period of the same population, each charged to one
    account in the ledger, with totals to date by the tree mechanism (:mod:`dp_ops.continual`).

    The spec's budget is the whole series' budget: every table releases, per cell, the period's
    values and the totals to date, and over the ``horizon`` periods spends exactly the budget
    (charged once, at the first period). More periods or a larger ``max_periods`` mean more
    noise on every value.
    """

    name: str
    """Names the series: its releases are ``<name>-<period>`` and its account in the ledger."""
    period: PeriodKind
    """day, month, quarter or year."""
    start: str
    """The first period (``2027-01`` for months)."""
    horizon: int
    """How many periods the series has; its noise grows with log2(horizon) (Laplace) or
    about sqrt(log2(horizon)) (Gaussian)."""
    max_periods: int
    """How many periods one privacy unit may contribute to (default: every one); the release
    drops a unit's rows from later periods once it has used them. Noise grows linearly with it
    (Laplace), or about linearly (Gaussian)."""
    tree_levels: int | None = None
    """Levels of the tree: 1 releases each period alone (totals to date are their sums), more
    measure sums of 2, 4, ... periods too, so totals to date sum fewer nodes but each node has
    more noise. None (``auto``): the depth whose worst total to date is the most accurate
    (:func:`dp_ops.continual.best_depth`); state it to favour the periods' own values (1) or a
    fixed design."""

    def release_id(self, period: str) -> str:
        return f"{self.name}-{period}"


SERIES_KINDS = ("count", "sum", "mean")
TO_DATE = "_to_date"
"""Suffix of a series' released totals to date: ``count_to_date``, ``sum_income_to_date``."""
"""Metrics a series releases per period and to date: those whose totals add up over periods."""


@dataclass(frozen=True)
class ReleaseSpec:
    input: InputSpec
    budget: BudgetSpec
    output: OutputSpec
    tables: tuple[TableSpec, ...]
    noise: NoiseFamily = "auto"
    """laplace, gaussian, or auto: per table, the family with the smaller noise."""
    domains: tuple[tuple[str, tuple[Any, ...]], ...] = field(default=())
    """Public domains of dimension columns, used for cross-product partitions."""
    ledger: LedgerSpec | None = None
    """Charge the release against a dataset's lifetime budget (recommended for production)."""
    series: SeriesSpec | None = None
    """A release series (one release per period, totals to date by the tree mechanism)."""

    def domain(self, column: str) -> tuple[Any, ...] | None:
        return dict(self.domains).get(column)


# --------------------------------------------------------------------------------------------
# Parsing


def _fail(where: str, message: str) -> SpecError:
    return SpecError(f"{where}: {message}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, "must be a mapping of keys to values")
    return value


def _only(value: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _fail(f"{where}.{unknown[0]}", f"unknown key; allowed keys are {', '.join(allowed)}")


def _required(value: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in value or value[key] is None:
        raise _fail(f"{where}.{key}", "is required")
    return value[key]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _fail(where, f"must be finite, got {value!r}")
    return float(value)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, f"must be a whole number >= 1, got {value!r}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise _fail(where, f"must be a name of letters, digits, '_' or '-', got {value!r}")
    return value


def _column(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"must be a column name, got {value!r}")
    return value


def _choice(value: Any, choices: Sequence[str], where: str) -> Any:
    if value not in choices:
        raise _fail(where, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_expectation(raw: Any, where: str) -> ExpectationSpec:
    m = _mapping(raw, where)
    _only(m, ("column", "not_null", "in_set", "between"), where)
    column = _column(_required(m, "column", where), f"{where}.column")
    kinds = [k for k in ("not_null", "in_set", "between") if k in m]
    if len(kinds) != 1:
        raise _fail(where, "give exactly one of not_null: true, in_set: [...], between: [lo, hi]")
    kind = kinds[0]
    value = m[kind]
    if kind == "not_null":
        if value is not True:
            raise _fail(f"{where}.not_null", "must be true")
        return ExpectationSpec(column, "not_null")
    if kind == "in_set":
        if not isinstance(value, list) or not value:
            raise _fail(f"{where}.in_set", "must be a non-empty list of allowed values")
        if any(v is None or isinstance(v, list | dict) for v in value):
            raise _fail(f"{where}.in_set", "values must be strings, numbers, booleans or dates")
        return ExpectationSpec(column, "in_set", values=tuple(value))
    if not isinstance(value, list) or len(value) != 2:
        raise _fail(f"{where}.between", "must be [lower, upper] (null for an open end)")
    lo, hi = (
        None if v is None else _number(v, f"{where}.between[{i}]") for i, v in enumerate(value)
    )
    if lo is None and hi is None:
        raise _fail(f"{where}.between", "give at least one bound")
    if lo is not None and hi is not None and lo > hi:
        raise _fail(f"{where}.between", "lower must not exceed upper")
    return ExpectationSpec(column, "between", min_value=lo, max_value=hi)


def parse_input(raw: Any, where: str = "input") -> InputSpec:
    m = _mapping(raw, where)
    keys = (
        "path",
        "table",
        "format",
        "privacy_unit",
        "csv_header",
        "on_invalid",
        "expectations",
        "validator",
        "randomized_response",
    )
    _only(m, keys, where)
    if ("path" in m) == ("table" in m):
        raise _fail(
            where, "give path (Parquet or CSV files) or table (a catalog table), exactly one"
        )
    table = None
    if "table" in m:
        table = m["table"]
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
            raise _fail(
                f"{where}.table",
                "must be a table name such as persons, db.persons or catalog.db.persons "
                "(letters, digits and underscores in each part)",
            )
        for option in ("format", "csv_header"):
            if option in m:
                raise _fail(
                    f"{where}.{option}", "applies to input.path only; a table has its own format"
                )
    fmt = _choice(m.get("format", "parquet"), ("parquet", "csv"), f"{where}.format")
    header = m.get("csv_header", True)
    if not isinstance(header, bool):
        raise _fail(f"{where}.csv_header", "must be true or false")
    on_invalid = _choice(m.get("on_invalid", "fail"), ("fail", "quarantine"), f"{where}.on_invalid")
    validator = _choice(
        m.get("validator", "great_expectations"),
        ("great_expectations", "spark"),
        f"{where}.validator",
    )
    raw_exp = m.get("expectations") or []
    if not isinstance(raw_exp, list):
        raise _fail(f"{where}.expectations", "must be a list")
    return InputSpec(
        path=_column(m["path"], f"{where}.path") if table is None else None,
        table=table,
        format=fmt,
        privacy_unit=_column(_required(m, "privacy_unit", where), f"{where}.privacy_unit"),
        csv_header=header,
        on_invalid=on_invalid,
        validator=validator,
        expectations=tuple(
            parse_expectation(e, f"{where}.expectations[{i}]") for i, e in enumerate(raw_exp)
        ),
        randomized_response=_parse_designs(
            m.get("randomized_response"), f"{where}.randomized_response"
        ),
    )


def _parse_designs(raw: Any, where: str) -> tuple[RandomizedResponse, ...]:
    """``{column, p_truth, p_yes}``, or a list of them."""
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(raw, list) else where
        d = _mapping(item, at)
        _only(d, ("column", "p_truth", "p_yes"), at)
        column = _column(_required(d, "column", at), f"{at}.column")
        p_truth = _exact(_required(d, "p_truth", at), f"{at}.p_truth")
        p_yes = _exact(d.get("p_yes", 0.5), f"{at}.p_yes")
        if not 0 < p_truth < 1:
            raise _fail(
                f"{at}.p_truth",
                f"must lie in (0, 1), got {_show(p_truth)} (1 would report the truth: no "
                "randomized response at all)",
            )
        if not 0 < p_yes < 1:
            raise _fail(f"{at}.p_yes", f"must lie in (0, 1), got {_show(p_yes)}")
        out.append(RandomizedResponse(column, p_truth, p_yes))
    if len({d.column for d in out}) != len(out):
        raise _fail(where, "lists a column twice")
    return tuple(out)


def parse_budget(raw: Any, where: str = "budget") -> BudgetSpec:
    m = _mapping(raw, where)
    _only(m, ("epsilon", "delta", "rho"), where)
    if ("epsilon" in m) == ("rho" in m):
        raise _fail(where, "state the budget as epsilon (with optional delta) or as rho, not both")
    delta = _exact(m.get("delta", 0), f"{where}.delta")
    if not 0 <= delta < 1:
        raise _fail(f"{where}.delta", f"must lie in [0, 1), got {_show(delta)}")
    if 0 < delta < MIN_DELTA:
        raise _fail(f"{where}.delta", f"must be 0 or at least 1e-100, got {_show(delta)}")
    name = "rho" if "rho" in m else "epsilon"
    amount = _exact(m[name], f"{where}.{name}")
    if amount <= 0:
        raise _fail(f"{where}.{name}", f"must be > 0, got {_show(amount)}")
    if amount < MIN_BUDGET:
        raise _fail(
            f"{where}.{name}",
            f"{_show(amount)} is below 1e-12: every noise scale would be over 10^12 times a "
            "person's contribution; state a larger budget",
        )
    if name == "rho":
        return BudgetSpec(rho=amount, delta=delta)
    return BudgetSpec(epsilon=amount, delta=delta)


def _exact(value: Any, where: str) -> Fraction:
    """A budget amount, exactly as written (see :func:`dp_ops.rational.exact_decimal`)."""
    try:
        return exact_decimal(value)
    except ValueError:
        raise _fail(
            where, f"must be a number (like 1, 0.5, 1e-6 or 1/3), got {_show_raw(value)}"
        ) from None


def _show(amount: Fraction) -> str:
    return f"{float(amount):.6g}"


def _show_raw(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_metric(raw: Any, where: str) -> MetricSpec:
    if isinstance(raw, str):
        _choice(raw, ("count", "privacy_unit_count"), where)
        return MetricSpec(kind=raw)
    m = _mapping(raw, where)
    kinds = [k for k in m if k in METRIC_KINDS]
    if len(kinds) != 1:
        raise _fail(where, f"must name exactly one metric of {', '.join(METRIC_KINDS)}")
    kind = kinds[0]
    if kind in ("count", "privacy_unit_count"):
        _only(m, (kind,), where)
        return MetricSpec(kind=kind)
    if kind in HISTOGRAM_KINDS:
        return _parse_histogram(m, kind, where)
    if kind in CATEGORY_KINDS:
        return _parse_categorical(m, kind, where)
    if kind == "proportion":  # of a 0/1 column: the mean with bounds 0 and 1
        _only(m, (kind,), where)
        column = _column(m[kind], f"{where}.{kind}")
        return MetricSpec(kind=kind, column=column, lower=0.0, upper=1.0, granularity=1.0)
    _only(m, (kind, "lower", "upper", "granularity"), where)
    column = _column(m[kind], f"{where}.{kind}")
    auto = tuple(side for side in ("lower", "upper") if m.get(side) == AUTO)
    if auto:
        return _auto_metric(m, kind, column, auto, where)
    lower = _number(_required(m, "lower", where), f"{where}.lower")
    upper = _number(_required(m, "upper", where), f"{where}.upper")
    if not lower < upper:
        raise _fail(
            f"{where}.lower",
            f"must be below upper ({lower!r} >= {upper!r}); with equal bounds every value is "
            "clamped to one constant, so release the count and multiply instead",
        )
    granularity = m.get("granularity")
    if granularity is None:
        granularity = default_granularity(lower, upper)
    granularity = _number(granularity, f"{where}.granularity")
    if granularity <= 0:
        raise _fail(f"{where}.granularity", "must be > 0")
    steps = max(abs(lower), abs(upper)) / granularity
    if steps > MAX_STEPS:
        raise _fail(
            f"{where}.granularity",
            f"too fine for the bounds: {steps:.3g} steps from 0 to a bound, at most 2^52; "
            "use a coarser granularity (or leave it out for the default of about 2^16 steps)",
        )
    return MetricSpec(kind=kind, column=column, lower=lower, upper=upper, granularity=granularity)


AUTO = "auto"
"""A bound the release chooses itself: ``upper: auto``."""


def _auto_metric(
    m: Mapping[str, Any], kind: str, column: str, auto: tuple[str, ...], where: str
) -> MetricSpec:
    """A metric with bounds the release chooses: placeholders around the bound given, if any."""
    fixed = {
        side: _number(_required(m, side, where), f"{where}.{side}")
        for side in ("lower", "upper")
        if side not in auto
    }
    lower = fixed.get("lower", fixed.get("upper", 1.0) - 1.0)
    upper = fixed.get("upper", lower + 1.0)
    granularity = m.get("granularity")
    if granularity is None:
        auto = (*auto, "granularity")
        granularity = default_granularity(lower, upper)
    granularity = _number(granularity, f"{where}.granularity")
    if granularity <= 0:
        raise _fail(f"{where}.granularity", "must be > 0")
    return MetricSpec(kind, column, lower, upper, granularity, auto=auto)


def _parse_categorical(m: Mapping[str, Any], kind: str, where: str) -> MetricSpec:
    """``{mode: col, categories: [...]}`` or ``{top_k: col, k: 3, categories: [...]}``."""
    _only(m, (kind, "categories", *(("k",) if kind == "top_k" else ())), where)
    column = _column(m[kind], f"{where}.{kind}")
    raw = _required(m, "categories", where)
    if not isinstance(raw, list) or len(raw) < 2:
        raise _fail(f"{where}.categories", "must list at least two categories, e.g. [a, b, c]")
    if len(raw) > MAX_CATEGORIES:
        raise _fail(f"{where}.categories", f"lists {len(raw)}, at most {MAX_CATEGORIES}")
    if any(isinstance(c, bool) or not isinstance(c, (str, int)) for c in raw):
        raise _fail(f"{where}.categories", "must be text or whole numbers")
    if len(set(map(repr, raw))) != len(raw):
        raise _fail(f"{where}.categories", "lists a category twice")
    k = _positive_int(m.get("k", 1), f"{where}.k") if kind == "top_k" else 1
    if k >= len(raw):
        raise _fail(f"{where}.k", f"must be below the number of categories ({len(raw)})")
    return MetricSpec(kind=kind, column=column, categories=tuple(raw), k=k)


def _parse_histogram(m: Mapping[str, Any], kind: str, where: str) -> MetricSpec:
    column = _column(m[kind], f"{where}.{kind}")
    if kind == "histogram":
        _only(m, (kind, "bins"), where)
        raw = _required(m, "bins", where)
        if not isinstance(raw, list) or len(raw) < 2:
            raise _fail(f"{where}.bins", "must list at least two bin edges, e.g. [0, 10, 100]")
        edges = tuple(_number(e, f"{where}.bins[{i}]") for i, e in enumerate(raw))
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise _fail(f"{where}.bins", "edges must increase")
        return MetricSpec(kind, column, edges[0], edges[-1], edges=edges)
    _only(m, (kind, "probabilities", "lower", "upper", "bins"), where)
    auto = tuple(side for side in ("lower", "upper") if _required(m, side, where) == AUTO)
    fixed = {
        side: _number(m[side], f"{where}.{side}") for side in ("lower", "upper") if side not in auto
    }
    lower = fixed.get("lower", fixed.get("upper", 1.0) - 1.0)  # placeholders until chosen
    upper = fixed.get("upper", lower + 1.0)
    if not lower < upper:
        raise _fail(f"{where}.lower", f"must be below upper ({lower!r} >= {upper!r})")
    bins = _positive_int(m.get("bins", 100), f"{where}.bins")
    raw = _required(m, "probabilities", where)
    if not isinstance(raw, list) or not raw:
        raise _fail(f"{where}.probabilities", "must list probabilities, e.g. [0.5, 0.9]")
    probabilities = tuple(_number(p, f"{where}.probabilities[{i}]") for i, p in enumerate(raw))
    if any(not 0 < p < 1 for p in probabilities) or len(set(probabilities)) != len(raw):
        raise _fail(f"{where}.probabilities", "must be distinct numbers strictly between 0 and 1")
    edges = quantile_grid(lower, upper, bins)
    return MetricSpec(
        kind, column, lower, upper, edges=edges, probabilities=probabilities, auto=auto
    )


def quantile_grid(lower: float, upper: float, bins: int) -> tuple[float, ...]:
    """The edges of the grid a quantile is read from: ``bins`` equal bins over [lower, upper]."""
    return tuple(lower + (upper - lower) * i / bins for i in range(bins + 1))


def parse_partitions(raw: Any, where: str) -> PublicPartitions | PrivatePartitions:
    m = _mapping(raw, where)
    kind = _choice(m.get("type"), ("public", "private"), f"{where}.type")
    if kind == "private":
        _only(m, ("type", "strategy", "pre_threshold", "weight"), where)
        weight = _number(m.get("weight", 1.0), f"{where}.weight")
        if weight <= 0:
            raise _fail(f"{where}.weight", "must be > 0")
        return PrivatePartitions(
            strategy=_choice(m.get("strategy", "auto"), SELECTION_STRATEGIES, f"{where}.strategy"),
            pre_threshold=_positive_int(m.get("pre_threshold", 1), f"{where}.pre_threshold"),
            weight=weight,
        )
    _only(m, ("type", "keys", "path", "format"), where)
    if "path" in m:
        return PublicPartitions(
            source="file",
            path=_column(m["path"], f"{where}.path"),
            format=_choice(m.get("format", "csv"), ("parquet", "csv"), f"{where}.format"),
        )
    keys = m.get("keys", "cross_product")
    if keys == "cross_product":
        return PublicPartitions(source="cross_product")
    if not isinstance(keys, list) or not keys:
        raise _fail(f"{where}.keys", "must be 'cross_product' or a non-empty list of key rows")
    rows = []
    for i, row in enumerate(keys):
        items = row if isinstance(row, list) else [row]
        rows.append(tuple(items))
        if any(isinstance(v, list | dict) or v is None for v in items):
            raise _fail(f"{where}.keys[{i}]", "must hold one plain value per dimension")
    return PublicPartitions(source="inline", rows=tuple(rows))


def parse_table(raw: Any, where: str) -> TableSpec:
    m = _mapping(raw, where)
    _only(
        m,
        (
            "name",
            "dimensions",
            "partitions",
            "bounds",
            "metrics",
            "weight",
            "levels",
            "level_weights",
            "max_detail_loss",
            "geography",
            "margins",
            "auto_bounds",
        ),
        where,
    )
    name = _name(_required(m, "name", where), f"{where}.name")
    dims_raw = m.get("dimensions", [])
    if not isinstance(dims_raw, list):
        raise _fail(f"{where}.dimensions", "must be a list of column names")
    dims = tuple(_column(d, f"{where}.dimensions[{i}]") for i, d in enumerate(dims_raw))
    if len(set(dims)) != len(dims):
        raise _fail(f"{where}.dimensions", "lists a column twice")
    partitions = parse_partitions(_required(m, "partitions", where), f"{where}.partitions")
    if isinstance(partitions, PrivatePartitions) and not dims:
        raise _fail(f"{where}.partitions", "private selection needs at least one dimension")
    b = _mapping(_required(m, "bounds", where), f"{where}.bounds")
    _only(b, ("max_partitions", "max_rows_per_partition"), f"{where}.bounds")
    bounds = _parse_bounds(b, dims, f"{where}.bounds")
    metrics_raw = _required(m, "metrics", where)
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise _fail(f"{where}.metrics", "must be a non-empty list")
    metrics = tuple(parse_metric(x, f"{where}.metrics[{i}]") for i, x in enumerate(metrics_raw))
    names = [n for x in metrics for n in x.output_names]
    if len(set(names)) != len(names):
        raise _fail(f"{where}.metrics", "lists the same metric twice")
    for i, metric in enumerate(metrics):
        if metric.column is not None and metric.column in dims:
            raise _fail(f"{where}.metrics[{i}]", f"column {metric.column!r} is also a dimension")
        same = [
            x
            for x in metrics
            if x.column == metric.column
            and x.column is not None
            and x.kind not in (*HISTOGRAM_KINDS, *CATEGORY_KINDS)
            and metric.kind not in (*HISTOGRAM_KINDS, *CATEGORY_KINDS)
        ]
        if any(
            (x.lower, x.upper, x.granularity, x.auto)
            != (metric.lower, metric.upper, metric.granularity, metric.auto)
            for x in same
        ):
            raise _fail(
                f"{where}.metrics[{i}]", f"sum and mean of {metric.column!r} need the same bounds"
            )
    kinds = {x.kind for x in metrics}
    if kinds & set(CATEGORY_KINDS) and not kinds & {"count", "privacy_unit_count"}:
        raise _fail(
            f"{where}.metrics",
            "a mode or top_k needs the cell's count beside it (add count or "
            "privacy_unit_count): it says how far to trust the categories named",
        )
    weight = _number(m.get("weight", 1.0), f"{where}.weight")
    if weight <= 0:
        raise _fail(f"{where}.weight", "must be > 0")
    levels = _parse_levels(m.get("levels"), dims, f"{where}.levels")
    if levels:
        if isinstance(partitions, PrivatePartitions):
            raise _fail(f"{where}.levels", "consistent levels need public partitions")
        if any(x.kind not in ("count", "privacy_unit_count") for x in metrics):
            raise _fail(
                f"{where}.levels",
                "levels are made consistent for count and "
                "privacy_unit_count only; release sums and means in another table",
            )
        if (bounds.max_partitions > 1 or bounds.auto_partitions) and any(
            x.kind == "privacy_unit_count" for x in metrics
        ):
            raise _fail(
                f"{where}.levels",
                "privacy_unit_count adds up over levels only with bounds.max_partitions: 1",
            )
    level_weights = _parse_level_weights(m.get("level_weights"), levels, f"{where}.level_weights")
    geography, margins = _parse_suite(m, dims, partitions, metrics, bounds, where)
    detail_loss = _parse_detail_loss(m, levels or geography, f"{where}.max_detail_loss")
    auto_share, auto_quantile = _parse_auto_bounds(m, metrics, bounds, f"{where}.auto_bounds")
    return TableSpec(
        name=name,
        dimensions=dims,
        partitions=partitions,
        bounds=bounds,
        metrics=metrics,
        weight=weight,
        levels=levels,
        level_weights=level_weights,
        geography=geography,
        margins=margins,
        max_detail_loss=detail_loss,
        auto_share=auto_share,
        auto_quantile=auto_quantile,
    )


def _parse_bounds(b: Mapping[str, Any], dims: tuple[str, ...], where: str) -> BoundsSpec:
    rows = _positive_int(
        _required(b, "max_rows_per_partition", where), f"{where}.max_rows_per_partition"
    )
    l0 = _required(b, "max_partitions", where)
    if l0 != AUTO:
        if isinstance(l0, bool) or not isinstance(l0, int) or l0 < 1:
            raise _fail(
                f"{where}.max_partitions",
                f"must be a whole number >= 1, or auto (chosen by the release), got {l0!r}",
            )
        return BoundsSpec(l0, rows)
    if not dims:
        raise _fail(
            f"{where}.max_partitions",
            "a table without dimensions has one cell: write max_partitions: 1, not auto",
        )
    return BoundsSpec(1, rows, auto_partitions=True)


def _parse_auto_bounds(
    m: Mapping[str, Any], metrics: tuple[MetricSpec, ...], bounds: BoundsSpec, where: str
) -> tuple[float, float]:
    """(budget share, quantile) of the bounds a table's release chooses itself."""
    if "auto_bounds" not in m:
        return 0.1, 0.95
    if not any(x.auto for x in metrics) and not bounds.auto_partitions:
        raise _fail(
            where, "applies only when bounds.max_partitions or a metric's lower or upper is auto"
        )
    a = _mapping(m["auto_bounds"], where)
    _only(a, ("budget_share", "quantile"), where)
    share = _number(a.get("budget_share", 0.1), f"{where}.budget_share")
    quantile = _number(a.get("quantile", 0.95), f"{where}.quantile")
    if not 0 < share < 1:
        raise _fail(f"{where}.budget_share", "must lie in (0, 1)")
    if not 0.5 <= quantile < 1:
        raise _fail(f"{where}.quantile", "must lie in [0.5, 1)")
    return share, quantile


def _parse_suite(
    m: Mapping[str, Any],
    dims: tuple[str, ...],
    partitions: PublicPartitions | PrivatePartitions,
    metrics: tuple[MetricSpec, ...],
    bounds: BoundsSpec,
    where: str,
) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """(geography, margins) of a table suite, checked; empty for a plain table."""
    if "geography" not in m:
        if "margins" in m:
            raise _fail(f"{where}.margins", "needs geography: margins are measured per unit")
        return (), ()
    if "levels" in m or "level_weights" in m:
        raise _fail(
            f"{where}.geography",
            "give levels (a chain of margins) or geography with margins, not both",
        )
    raw = m["geography"]
    if not isinstance(raw, list) or not raw or not all(isinstance(g, list) for g in raw):
        raise _fail(
            f"{where}.geography",
            "must be a non-empty list of dimension lists, coarsest first, e.g. [[], [state]]",
        )
    geography = tuple(
        tuple(_column(c, f"{where}.geography[{i}][{j}]") for j, c in enumerate(g))
        for i, g in enumerate(raw)
    )
    for i, g in enumerate(geography):
        if not set(g) <= set(dims) or len(set(g)) != len(g):
            raise _fail(
                f"{where}.geography[{i}]", "must list distinct columns of the table's dimensions"
            )
        if i and not set(geography[i - 1]) < set(g):
            raise _fail(f"{where}.geography[{i}]", "each level must be nested in the next")
    attributes = [d for d in dims if d not in geography[-1]]
    if not attributes:
        raise _fail(
            f"{where}.geography",
            "leaves no attribute dimensions: a suite's units have attributes (for a chain of "
            "geographic levels alone, use levels)",
        )
    margins_raw = m.get("margins", [])
    if not isinstance(margins_raw, list) or not all(isinstance(q, list) for q in margins_raw):
        raise _fail(f"{where}.margins", "must be a list of attribute lists, e.g. [[sex], []]")
    margins = []
    for i, q in enumerate(margins_raw):
        names = tuple(_column(c, f"{where}.margins[{i}][{j}]") for j, c in enumerate(q))
        if not set(names) <= set(attributes) or len(set(names)) != len(names):
            raise _fail(
                f"{where}.margins[{i}]",
                f"must list distinct attribute dimensions (of {attributes}), not geography",
            )
        ordered = tuple(d for d in attributes if d in names)
        if ordered == tuple(attributes):
            raise _fail(f"{where}.margins[{i}]", "is the detailed table, which is always measured")
        if ordered in margins:
            raise _fail(f"{where}.margins[{i}]", "lists a margin twice")
        margins.append(ordered)
    if isinstance(partitions, PrivatePartitions):
        raise _fail(f"{where}.geography", "a suite needs public partitions")
    if any(x.kind not in ("count", "privacy_unit_count") for x in metrics):
        raise _fail(
            f"{where}.geography",
            "suites are made consistent for count and privacy_unit_count only",
        )
    if (bounds.max_partitions > 1 or bounds.auto_partitions) and any(
        x.kind == "privacy_unit_count" for x in metrics
    ):
        raise _fail(
            f"{where}.geography",
            "privacy_unit_count adds up over a suite only with bounds.max_partitions: 1",
        )
    return geography, tuple(margins)


def _parse_detail_loss(
    m: Mapping[str, Any], levels: tuple[tuple[str, ...], ...], where: str
) -> float:
    if "max_detail_loss" not in m:
        return DEFAULT_DETAIL_LOSS
    if not levels:
        raise _fail(where, "needs levels: it splits the table's budget between them and the table")
    if "level_weights" in m:
        raise _fail(where, "give level_weights or max_detail_loss, not both")
    loss = _number(m["max_detail_loss"], where)
    if not 0 < loss <= MAX_DETAIL_LOSS:
        raise _fail(
            where,
            f"must be in (0, {MAX_DETAIL_LOSS:g}], got {loss!r} (0.1: the detailed cells' noise "
            "grows by at most 10%)",
        )
    return loss


def _parse_level_weights(
    raw: Any, levels: tuple[tuple[str, ...], ...], where: str
) -> tuple[float, ...]:
    if raw is None:
        return ()
    if not levels:
        raise _fail(where, "needs levels: one weight per level, then one for the table itself")
    if not isinstance(raw, list) or len(raw) != len(levels) + 1:
        raise _fail(
            where,
            f"must list {len(levels) + 1} weights: one per level, coarsest first, then one for "
            "the table itself",
        )
    weights = tuple(_number(w, f"{where}[{i}]") for i, w in enumerate(raw))
    for i, w in enumerate(weights):
        if w <= 0:
            raise _fail(f"{where}[{i}]", f"must be > 0, got {w!r}")
    return weights


def _parse_levels(raw: Any, dims: tuple[str, ...], where: str) -> tuple[tuple[str, ...], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(lv, list) for lv in raw):
        raise _fail(where, "must be a list of dimension lists, coarsest first, e.g. [[], [state]]")
    levels = tuple(
        tuple(_column(c, f"{where}[{i}][{j}]") for j, c in enumerate(lv))
        for i, lv in enumerate(raw)
    )
    chain = [*levels, dims]
    for i, lv in enumerate(levels):
        if not set(lv) <= set(dims) or len(set(lv)) != len(lv):
            raise _fail(f"{where}[{i}]", "must list distinct columns of the table's dimensions")
        if not set(lv) < set(chain[i + 1]):
            raise _fail(f"{where}[{i}]", "each level must be nested in the next, coarsest first")
    return levels


def parse_output(raw: Any, where: str = "output") -> OutputSpec:
    m = _mapping(raw, where)
    _only(
        m,
        (
            "path",
            "format",
            "confidence",
            "nonnegative_counts",
            "noise_warning_multiple",
            "catalog_database",
        ),
        where,
    )
    database = m.get("catalog_database")
    if database is not None and (
        not isinstance(database, str) or not _DATABASE_NAME.fullmatch(database)
    ):
        raise _fail(
            f"{where}.catalog_database",
            f"must be a database such as releases or spark_catalog.releases, got {database!r}",
        )
    confidence = _number(m.get("confidence", 0.95), f"{where}.confidence")
    if not 0 < confidence < 1:
        raise _fail(f"{where}.confidence", "must lie in (0, 1)")
    multiple = _number(m.get("noise_warning_multiple", 1000.0), f"{where}.noise_warning_multiple")
    if multiple <= 0:
        raise _fail(f"{where}.noise_warning_multiple", "must be > 0")
    nonneg = m.get("nonnegative_counts", True)
    if not isinstance(nonneg, bool):
        raise _fail(f"{where}.nonnegative_counts", "must be true or false")
    return OutputSpec(
        path=_column(_required(m, "path", where), f"{where}.path"),
        format=_choice(m.get("format", "parquet"), ("parquet", "csv"), f"{where}.format"),
        confidence=confidence,
        nonnegative_counts=nonneg,
        noise_warning_multiple=multiple,
        catalog_database=database,
    )


def parse_ledger(raw: Any, where: str = "ledger") -> LedgerSpec:
    m = _mapping(raw, where)
    _only(m, ("dataset", "path"), where)
    return LedgerSpec(
        dataset=_name(_required(m, "dataset", where), f"{where}.dataset"),
        path=_column(_required(m, "path", where), f"{where}.path"),
    )


def parse_spec(raw: Any) -> ReleaseSpec:
    """Validate a loaded YAML document into a :class:`ReleaseSpec` (raises ``SpecError``)."""
    m = _mapping(raw, "spec")
    _only(
        m, ("input", "budget", "output", "tables", "noise", "domains", "ledger", "series"), "spec"
    )
    domains_raw = _mapping(m.get("domains", {}) or {}, "domains")
    domains = []
    for col, values in domains_raw.items():
        if not isinstance(values, list) or not values:
            raise _fail(f"domains.{col}", "must be a non-empty list of values")
        if len(set(map(repr, values))) != len(values):
            raise _fail(f"domains.{col}", "lists a value twice")
        domains.append((str(col), tuple(values)))
    tables_raw = _required(m, "tables", "spec")
    if not isinstance(tables_raw, list) or not tables_raw:
        raise _fail("tables", "must be a non-empty list")
    tables = tuple(parse_table(t, f"tables[{i}]") for i, t in enumerate(tables_raw))
    if len({t.name for t in tables}) != len(tables):
        raise _fail("tables", "two tables share a name")
    outputs = [name for t in tables for name, _ in t.outputs]
    if len(set(outputs)) != len(outputs):
        raise _fail("tables", "two output tables share a name (levels add '<name>__by_<dims>')")
    input_spec = parse_input(_required(m, "input", "spec"))
    output = parse_output(_required(m, "output", "spec"))
    spec = ReleaseSpec(
        input=input_spec,
        budget=parse_budget(_required(m, "budget", "spec")),
        output=output,
        tables=tuple(_with_designs(t, input_spec, output.confidence) for t in tables),
        noise=_choice(m.get("noise", "auto"), ("auto", "laplace", "gaussian"), "noise"),
        domains=tuple(domains),
        ledger=parse_ledger(m["ledger"]) if m.get("ledger") is not None else None,
        series=parse_series(m["series"]) if m.get("series") is not None else None,
    )
    _check_cross_references(spec)
    if spec.series is not None:
        _check_series(spec)
        spec = replace(spec, tables=tuple(replace(t, to_date=True) for t in spec.tables))
    return spec


def parse_series(raw: Any, where: str = "series") -> SeriesSpec:
    m = _mapping(raw, where)
    _only(m, ("name", "period", "start", "horizon", "max_periods", "tree_levels"), where)
    name = _name(_required(m, "name", where), f"{where}.name")
    kind = _choice(_required(m, "period", where), KINDS, f"{where}.period")
    start = _required(m, "start", where)
    if isinstance(start, int) and not isinstance(start, bool) and kind == "year":
        start = str(start)  # YAML reads 2027 as a number ...
    elif isinstance(start, dt.date) and kind == "day":
        start = start.isoformat()  # ... and 2027-03-15 as a date
    ordinal(start, kind, f"{where}.start")
    horizon = _positive_int(_required(m, "horizon", where), f"{where}.horizon")
    if horizon > MAX_HORIZON:
        raise _fail(f"{where}.horizon", f"must be at most {MAX_HORIZON}, got {horizon}")
    max_periods = _positive_int(m.get("max_periods", horizon), f"{where}.max_periods")
    if max_periods > horizon:
        raise _fail(
            f"{where}.max_periods",
            f"must be at most the horizon ({horizon}), got {max_periods}",
        )
    depth = m.get("tree_levels", "auto")
    full = horizon.bit_length()
    if depth == "auto":
        depth = None
    elif isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= full:
        raise _fail(
            f"{where}.tree_levels",
            f"must be auto or a whole number from 1 to {full} (a tree over {horizon} periods "
            f"has nodes of 1 .. {1 << (full - 1)} periods), got {depth!r}",
        )
    return SeriesSpec(name, kind, start, horizon, max_periods, depth)


MAX_HORIZON = 4096
"""The most periods a series may have (4096 days is over 11 years)."""


def _check_series(spec: ReleaseSpec) -> None:
    """What a series needs: a ledger account, a budget whose cost is linear in the tree's
    sensitivity (epsilon alone, or rho), and tables whose totals add up over periods."""
    if spec.ledger is None:
        raise _fail(
            "series",
            "a series is charged once for all its periods: declare ledger.dataset and ledger.path",
        )
    b = spec.budget
    if b.rho is None and b.delta > 0:
        raise _fail(
            "budget",
            "a series' budget is epsilon alone (Laplace noise) or rho (Gaussian noise); "
            "state rho, with delta if the ledger keeps (epsilon, delta)",
        )
    if b.rho is not None and spec.noise == "laplace":
        raise _fail("noise", "a series with a rho budget adds Gaussian noise: remove noise")
    if b.rho is None and spec.noise == "gaussian":
        raise _fail("noise", "a series with an epsilon budget adds Laplace noise: state rho")
    for i, t in enumerate(spec.tables):
        where = f"tables[{i}]"
        if not isinstance(t.partitions, PublicPartitions):
            raise _fail(
                f"{where}.partitions",
                "a series releases the same public keys every period: declare them",
            )
        if t.levels or t.geography:
            raise _fail(where, "a series table has no levels or geography")
        if t.auto_bounds:
            raise _fail(where, "a series table declares its bounds (no auto)")
        for j, metric in enumerate(t.metrics):
            if metric.kind not in SERIES_KINDS:
                raise _fail(
                    f"{where}.metrics[{j}]",
                    f"a series releases {', '.join(SERIES_KINDS)} (totals that add up over "
                    f"periods), not {metric.kind}",
                )


def _with_designs(table: TableSpec, input_spec: InputSpec, confidence: float) -> TableSpec:
    """The table with each proportion given its column's randomized-response design, if any,
    and the interval level."""
    designs = {d.column: d for d in input_spec.randomized_response}
    metrics = tuple(
        replace(m, design=designs.get(m.column or ""), confidence=confidence)
        if m.kind == "proportion"
        else m
        for m in table.metrics
    )
    return replace(table, metrics=metrics)


def _check_suite_domains(spec: ReleaseSpec, table: TableSpec, where: str) -> None:
    cells = 1
    for d in table.attributes:
        values = spec.domain(d)
        if values is None:
            raise _fail(
                f"{where}.geography",
                f"a suite's attributes need declared domains: add domains.{d}",
            )
        cells *= len(values)
    if cells > MAX_SUITE_CELLS:
        raise _fail(
            f"{where}.geography",
            f"the detailed table has {cells} attribute cells per unit, over the "
            f"{MAX_SUITE_CELLS} a suite's least squares handles: coarsen an attribute's domain "
            "or release the finest cells in another table",
        )


def _check_cross_references(spec: ReleaseSpec) -> None:
    dims = {x for t in spec.tables for x in t.dimensions}
    for i, rr in enumerate(spec.input.randomized_response):
        if rr.column == spec.input.privacy_unit or rr.column in dims:
            raise _fail(
                f"input.randomized_response[{i}].column",
                f"{rr.column!r} is the privacy unit or a dimension: a randomized answer is a "
                "value column, released through a proportion metric",
            )
    for i, table in enumerate(spec.tables):
        where = f"tables[{i}]"
        if spec.input.privacy_unit in table.dimensions:
            raise _fail(f"{where}.dimensions", "must not contain the privacy unit column")
        p = table.partitions
        if (
            isinstance(p, PrivatePartitions)
            and p.strategy == "post_aggregation"
            and table.unit_count_measure is None
        ):
            raise _fail(
                f"{where}.partitions.strategy",
                "post_aggregation needs a released count of distinct units: add the "
                "privacy_unit_count metric, or measure count with "
                "bounds.max_rows_per_partition: 1",
            )
        if isinstance(p, PrivatePartitions) and spec.budget.is_zcdp:
            raise _fail(
                f"{where}.partitions",
                "private selection is not rho-zCDP: state the budget as epsilon and delta, "
                "or use public keys",
            )
        if isinstance(p, PrivatePartitions) and spec.budget.delta == 0:
            raise _fail(
                f"{where}.partitions",
                "private selection needs budget.delta > 0 (or use public keys)",
            )
        if isinstance(p, PublicPartitions) and p.source == "cross_product":
            for d in table.dimensions:
                if spec.domain(d) is None:
                    raise _fail(
                        f"{where}.partitions", f"cross_product needs domains.{d} to be declared"
                    )
        if isinstance(p, PublicPartitions) and p.source == "inline":
            key_dims = table.key_dimensions
            for j, row in enumerate(p.rows):
                if len(row) != len(key_dims):
                    what = "per geographic dimension" if table.geography else "per dimension"
                    raise _fail(
                        f"{where}.partitions.keys[{j}]",
                        f"needs {len(key_dims)} values, one {what} ({', '.join(key_dims)})",
                    )
        if table.geography:
            _check_suite_domains(spec, table, where)
    if spec.noise == "gaussian" and spec.budget.delta == 0 and not spec.budget.is_zcdp:
        raise _fail("noise", "gaussian noise needs budget.delta > 0")
