"""One table of a release, as a chain of DataFrame transformations.

``microdata -> cell identities -> bound_contributions -> aggregate_partitions -> public join |
pre-threshold and the data's cell keys -> add_noise (measurements, and the selection statistic
unless the released unit count is it) -> keep selected -> finalize``.

Spark runs when the noise is added: the exact per-cell table is computed once, then noised on the
driver or the executors (:mod:`pipelines.noise`). Because noise is keyed, evaluating the result
twice gives the same released values.

Most tables take a shorter way to the same values, the driver's (at most ``DRIVER_MAX_CELLS``
cells and keys, dimensions that are strings, integers, booleans or dates): the exact cells are
collected by identity, the table's keys come with their identities, and the driver joins the
two, fills public keys without data with zeros, noises, selects, post-processes
(:func:`~pipelines.postprocess.finalize_table`) and hands the released table back to Spark in
one partition. No join or shuffle of the keys in Spark, no eager checkpoint. The keys are

* the public keys declared in the spec (:class:`~pipelines.partitions.PublicKeys` with
  ``rows``): every key is released, cells of the data outside them are dropped;
* the declared cells private selection chooses from (every dimension's domain declared);
* for private selection otherwise, the data's own cells: a second Spark job, started on another
  thread before the cells' plan is built, scans the input again alongside and collects them.

Declared keys and cells get their identities on the driver
(:func:`pipelines.cells.driver_cell_ids`), without a Spark job.

Key files, more cells or keys than the driver takes, and other dimension types take Spark's way
(the join above), from the cells already computed.
"""

from __future__ import annotations

import contextvars
import os
import struct
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any, Generic, TypeAlias, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.errors import InternalError
from dp_ops.keyed_stream import new_key
from pipelines import noise as noising
from pipelines import sql_text as sql
from pipelines.aggregation import COUNT, UNITS, aggregate_partitions, measure_columns
from pipelines.bounding import bound_contributions
from pipelines.cells import (
    CELL_ID,
    Salt,
    cell_keys,
    driver_cell_ids,
    require_distinct,
    require_distinct_frame,
    with_cell_ids,
)
from pipelines.consistency import (
    COUNT as CONSISTENT,
)
from pipelines.consistency import (
    ESTIMATE_VAR,
    NOISE_VAR,
    NOISY,
    gls_levels,
    integer_levels,
)
from pipelines.noise import (
    CELL,
    ChoiceJob,
    Job,
    KeepJob,
    NoiseJob,
    add_noise,
    cell_digests,
    driver_frame,
    noise_on_driver,
)
from pipelines.partitions import ARROW_TYPES, PublicKeys, join_public
from pipelines.persistence import keep
from pipelines.plan import (
    Categorical,
    Histogram,
    SelectionPlan,
    Squares,
    TablePlan,
    categoricals,
    error_columns,
    histograms,
    level_column,
    squares,
)
from pipelines.postprocess import finalize, finalize_table
from pipelines.spark_compat import inheritable_thread, is_connect, to_arrow

SELECT = "_select"
R = TypeVar("R")


@dataclass(frozen=True, repr=False)
class Secrets:
    """Per-release secrets from the OS CSPRNG: the noise key and the bounding salt. Never logged."""

    key: bytes
    salt: tuple[int, int, int, int]
    cell_salt: Salt
    """Keys the cell identities (:mod:`pipelines.cells`)."""

    @classmethod
    def new(cls) -> Secrets:
        salt = struct.unpack("<6q", os.urandom(48))
        return cls(key=new_key(), salt=(salt[0], salt[1], salt[2], salt[3]), cell_salt=salt[4:6])

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


def bounded_aggregates(df: DataFrame, plan: TablePlan, unit: str, secrets: Secrets) -> DataFrame:
    """Exact aggregates of the bounded data per cell present in the data (not private).

    ``(_cell_id, measures...)``: cells by identity (:mod:`pipelines.cells`); only measures for a
    table without dimensions.
    """
    t = plan.table
    hist = histograms(t)
    cats = categoricals(t)
    sq = squares(t, plan.values)
    if hist or sq or cats:
        df = df.withColumns(
            {h.bin_column: bin_index(h) for h in hist}
            | {c.bin_column: category_index(c) for c in cats}
            | {s.row_column: square_steps(s) for s in sq}
        )
    extra = [h.bin_column for h in hist] + [c.bin_column for c in cats] + [s.row_column for s in sq]
    cells: list[str] = []
    if t.dimensions:
        keep = list(dict.fromkeys([unit, *(v.column for v in plan.values), *extra]))
        df = with_cell_ids(df, t.dimensions, secrets.cell_salt, keep)
        cells = [CELL_ID]
    bins = [(h.bin_column, [h.count_column(i) for i in range(h.bins)]) for h in hist]
    bins += [(c.bin_column, c.count_columns) for c in cats]
    return df.transform(
        bound_contributions,
        unit,
        cells,
        plan.values,
        t.bounds.max_partitions,
        t.bounds.max_rows_per_partition,
        secrets.salt,
        extra,
    ).transform(
        aggregate_partitions, cells, plan.values, bins, [(s.row_column, s.measure) for s in sq]
    )


def square_steps(s: Squares) -> Column:
    """A row's squared centered grid value, on the squares grid (0 .. SQUARE_STEPS)."""
    centered = f"CAST({s.value.grid_sql()} AS DOUBLE)"
    return sql.expr(sql.round_half_up(f"{centered} * {centered} / {sql.double(s.step)}"))


def bin_index(h: Histogram) -> Column:
    """The bin of a row's value, clamped into the histogram's range: 0 .. bins - 1."""
    value = f"CAST({sql.name(h.metric.column or '')} AS DOUBLE)"
    above = [f"CAST({value} >= {sql.double(edge)} AS INT)" for edge in h.metric.edges[1:-1]]
    return sql.expr(" + ".join(["0", *above]))


def category_index(c: Categorical) -> Column:
    """The index of a row's category among the metric's (-1, counted nowhere, for others)."""
    value = sql.name(c.metric.column or "")

    def same(v: object) -> str:  # a whole number matches 3 and 3.0; text matches its text
        if isinstance(v, int):
            return f"CAST({value} AS DOUBLE) = {sql.double(v)}"
        return f"CAST({value} AS STRING) = {sql.string(str(v))}"

    cases = " ".join(f"WHEN {same(v)} THEN {i}" for i, v in enumerate(c.metric.categories))
    return sql.expr(f"CASE {cases} ELSE -1 END")


def all_measures(plan: TablePlan) -> list[str]:
    """The aggregated columns of a table: counts, sums, histogram bins, category counts."""
    bins = [h.count_column(i) for h in histograms(plan.table) for i in range(h.bins)]
    cats = [column for c in categoricals(plan.table) for column in c.count_columns]
    sq = [s.measure for s in squares(plan.table, plan.values)]
    return [*measure_columns(plan.values), *sq, *bins, *cats]


def noise_jobs(plan: TablePlan) -> list[Job]:
    """One job per noised column; a histogram's measurement is noised in each of its bins."""
    name = plan.table.name
    hist = {h.measure: h for h in histograms(plan.table)}
    jobs: list[Job] = []
    for m in plan.measurements:
        h = hist.get(m.column)
        if h is None:
            jobs.append(NoiseJob(m, f"{name}/{m.column}"))
            continue
        for i in range(h.bins):
            column = h.count_column(i)
            jobs.append(NoiseJob(m, f"{name}/{column}", target=column))
    for c in categoricals(plan.table):  # the exponential mechanism: no noise on the counts
        jobs.append(
            ChoiceJob(
                tuple(c.count_columns),
                c.metric.k,
                plan.cell_epsilon(c.metric),
                plan.table.bounds.max_rows_per_partition,
                f"{name}/{c.metric.output_name}",
            )
        )
    return jobs


def release_table(
    df: DataFrame,
    plan: TablePlan,
    unit: str,
    secrets: Secrets,
    public_keys: PublicKeys | None,
    nonnegative: bool = True,
    add_noise_: bool = True,
    candidates: pa.Table | None = None,
) -> DataFrame:
    """The released table: ``(dims..., metrics...)``.

    ``df``: validated input (:func:`pipelines.validation.validate_input`), so no dimension value
    is null: keys that differ only in where a null sits share a cell identity, and the release
    would stop (:class:`~dp_ops.errors.RerunError`) however often it is run.
    ``candidates``: for private selection, every cell the input can hold (the cross product of
    the dimensions' declared domains, which validation enforces), when it is on the driver:
    selection then runs there (see the module docstring); the same cells are released.

    ``add_noise_=False`` is a test mode only: bounding, selection by the exact count and
    aggregation without noise, so tests can compare exactly. The jobs never set it.
    """
    dims = list(plan.table.dimensions)
    measures = all_measures(plan)
    name = plan.table.name
    sel = plan.selection
    if sel is None and public_keys is None and dims:
        raise ValueError(f"table {name!r} has public partitions but no key DataFrame")
    # a scan for the data's keys starts first: it runs while the cells' plan is built
    keys = _driver_keys(df, plan, secrets, public_keys, candidates) if dims else None
    try:
        cells, jobs = _exact_cells(df, plan, unit, secrets)
        if keys is not None:
            on_driver, cells = _driver_way(
                cells, keys, plan, df.schema, secrets, jobs, add_noise_, nonnegative
            )
            if on_driver is not None:
                return on_driver
    except BaseException:  # the scan alongside is no longer needed
        if isinstance(keys, Alongside):
            keys.cancel()
        raise
    if sel is None:
        key_frame = (
            cell_key_frame(public_keys.frame, dims, secrets, name)
            if public_keys is not None
            else None
        )
        cells = join_public(cells, key_frame, dims, measures)
    elif dims:  # the dimension values of the cells found in the data
        cells = cells.join(cell_key_frame(df, dims, secrets, name), on=CELL_ID)
    noisy = noise_and_select(cells, dims, measures, sel, jobs, secrets.key, add_noise_)
    return finalize(noisy, plan, nonnegative)


def noise_and_select(
    cells: DataFrame,
    dims: Sequence[str],
    measures: Sequence[str],
    sel: SelectionPlan | None,
    jobs: Sequence[Job],
    key: bytes,
    add_noise_: bool = True,
) -> DataFrame:
    """Exact cells ``(dims..., measures..., [UNITS])`` noised by ``jobs`` under ``key``; under
    selection only those kept (Spark's way; :func:`_selected` is the driver's rule), with the
    selection statistic as a column that :func:`~pipelines.postprocess.finalize` drops."""
    if sel is not None:
        offset = _statistic_offset(sel)
        statistic = [] if offset is None else [(F.col(UNITS) - F.lit(offset)).alias(SELECT)]
        cells = cells.select(*dims, *measures, *statistic)
    noisy = add_noise(cells, dims, jobs, key) if add_noise_ else cells
    if sel is not None:
        column, shift = _decisive(sel)
        noisy = noisy.where(F.col(column) - F.lit(shift) >= sel.threshold)
    return noisy


def noisy_measurements(df: DataFrame, plan: TablePlan, unit: str, secrets: Secrets) -> DataFrame:
    """Every cell of ``df`` with its noised measurements, before selection and post-processing:
    ``(_cell_id, measures...)``, the values the release's mechanisms draw (for audits: the
    mechanisms themselves, not what post-processing makes of them). Each cell's noise is keyed
    by its identity, as in a release."""
    cells, jobs = _exact_cells(df, replace(plan, selection=None), unit, secrets)
    key = [CELL_ID] if plan.table.dimensions else []
    return add_noise(cells, key, jobs, secrets.key)


def cell_key_frame(df: DataFrame, dims: Sequence[str], secrets: Secrets, table: str) -> DataFrame:
    """``(dims..., _cell_id)`` of each distinct cell of ``df`` (the input, or a key table) for
    Spark's way, computed once and checked for a shared identity."""
    return require_distinct_frame(cell_keys(df, dims, secrets.cell_salt), table)


def _exact_cells(
    df: DataFrame, plan: TablePlan, unit: str, secrets: Secrets
) -> tuple[DataFrame, list[Job]]:
    """The exact aggregates by cell identity (under selection, the cells that reach the
    pre-threshold), and the noise jobs of the table: its measurements and selection statistic."""
    cells = bounded_aggregates(df, plan, unit, secrets)
    jobs = noise_jobs(plan) + selection_jobs(plan)
    sel = plan.selection
    if sel is not None:
        cells = cells.where(f"{sql.name(UNITS)} >= {sql.long(sel.pre_threshold)}")
    return cells, jobs


def selection_jobs(plan: TablePlan) -> list[Job]:
    """The draw of a private selection's own statistic, if it has one."""
    sel, name = plan.selection, plan.table.name
    if sel is not None and sel.table is not None:  # truncated geometric: SELECT is 1 or 0
        return [KeepJob(SELECT, sel.table, f"{name}/{SELECT}")]
    if sel is not None and sel.noise is not None:  # thresholding of a separate noisy count
        return [NoiseJob(sel.noise, f"{name}/{SELECT}")]
    return []


def _statistic_offset(sel: SelectionPlan) -> int | None:
    """Selection by a separate statistic: SELECT = distinct units - offset (then noised, or
    turned into 1 or 0 by the truncated geometric); None when the released unit count decides."""
    if sel.table is not None:
        return 0
    if sel.noise is not None:
        return sel.pre_threshold - 1
    return None


def _decisive(sel: SelectionPlan) -> tuple[str, int]:
    """The noisy column selection compares with its threshold, and the shift it subtracts first:
    a cell is kept iff ``column - shift >= threshold``."""
    if sel.carrier is not None:  # post_aggregation: the released unit count decides
        return sel.carrier, sel.pre_threshold - 1
    return SELECT, 0


def _selected(table: pa.Table, sel: SelectionPlan) -> pa.Table:
    """The rows of a (noisy) Arrow table that selection keeps: the Spark path's rule."""
    column, shift = _decisive(sel)
    return table.filter(pc.greater_equal(pc.subtract(table.column(column), shift), sel.threshold))


class Alongside(Generic[R]):
    """``job()`` (Spark actions) run on a second thread, from now until :meth:`result`. The
    thread tags its jobs with a tag of its own so that :meth:`cancel` stops them and no other.

    On a classic session the thread inherits the caller's Spark job group, properties and tags
    (``InheritableThread``), as the jobs of the caller's own thread would, and the tag is a job
    tag; on Spark Connect the tag is a session tag of the thread, and :meth:`cancel` interrupts
    the operations that carry it."""

    def __init__(self, spark: SparkSession, job: Callable[[], R]) -> None:
        self._outcome: list[R] = []
        self._error: list[BaseException] = []
        self._tag = f"dprelease-alongside-{uuid.uuid4().hex}"
        self._stop: Callable[[], object]
        tags: Any
        if is_connect(spark):
            tags = spark  # session tags: per thread in the Connect client
            add, remove = tags.addTag, tags.removeTag
            self._stop = lambda: tags.interruptTag(self._tag)
        else:
            tags = spark.sparkContext
            add, remove = tags.addJobTag, tags.removeJobTag
            self._stop = lambda: tags.cancelJobsWithTag(self._tag)

        context = contextvars.copy_context()  # the caller's release scope (pipelines.persistence)

        def run() -> None:
            add(self._tag)
            try:
                self._outcome.append(context.run(job))
            except BaseException as e:  # handed to the caller by result()
                self._error.append(e)
            finally:
                remove(self._tag)

        if is_connect(spark):
            self._thread: threading.Thread = threading.Thread(target=run, daemon=True)
        else:
            self._thread = inheritable_thread(spark, run)
        self._thread.start()

    def wait(self) -> None:
        """Until the job ends."""
        self._thread.join()

    def cancel(self) -> None:
        """Stop the job's Spark jobs (running or still to come) and wait until it ends; for a
        caller that no longer needs its value, so a failed release does not wait for a scan."""
        self._stop()
        while self._thread.is_alive():  # a job submitted after the first cancel
            self._thread.join(timeout=0.5)
            self._stop()

    def result(self) -> R:
        """The job's value, once it ends; its exception if it raised one."""
        self.wait()
        if self._error:
            raise self._error[0]
        return self._outcome[0]


DriverKeys: TypeAlias = pa.Table | Alongside[pa.Table]
"""The keys of a table whose cells go to the driver, with their identities
``(dims..., _cell_id)``: a table when they are on the driver already (declared keys or cells;
identities computed there), else a Spark job collecting them, already running (a scan of the
input for the data's own cells, at most one row more than the driver takes). Either way they are
checked for a shared identity (:func:`~pipelines.cells.require_distinct`). Public keys are all
released, with zeros where the data has none; under selection only the cells of the data that
selection keeps are."""


def _driver_keys(
    df: DataFrame,
    plan: TablePlan,
    secrets: Secrets,
    public_keys: PublicKeys | None,
    candidates: pa.Table | None,
) -> DriverKeys | None:
    """Where the keys of the driver's way come from, or None for Spark's way (key files, more
    keys than the driver takes, dimension types it cannot identify). A scan of the input for the
    data's own keys starts now; the caller takes its result or cancels it."""
    dims = list(plan.table.dimensions)
    salt = secrets.cell_salt
    name = plan.table.name

    def declared(rows: pa.Table) -> pa.Table:
        types = pa.schema([(d, ARROW_TYPES[type(df.schema[d].dataType)]) for d in dims])
        return require_distinct(driver_cell_ids(rows.select(dims).cast(types), dims, salt), name)

    limit = noising.DRIVER_MAX_CELLS
    if not driver_key_types(df.schema, dims):
        return None
    if plan.selection is None:
        rows = public_keys.rows if public_keys is not None else None
        if rows is None or rows.num_rows > limit:
            return None
        return declared(rows)
    if candidates is not None and candidates.num_rows <= limit:
        return declared(candidates)
    if candidates is None:

        def scan() -> pa.Table:  # planned on the second thread, while the cells' plan is built
            return require_distinct(to_arrow(cell_keys(df, dims, salt).limit(limit + 1)), name)

        return Alongside(df.sparkSession, scan)
    return None


def driver_key_types(schema: T.StructType, dims: Sequence[str]) -> bool:
    """Whether the cells' dimension values can be noised on the driver: strings, integers,
    booleans or dates (:func:`pipelines.noise.cell_digests`)."""
    return all(isinstance(schema[d].dataType, tuple(ARROW_TYPES)) for d in dims)


def _driver_way(
    cells: DataFrame,
    keys: DriverKeys,
    plan: TablePlan,
    schema: T.StructType,
    secrets: Secrets,
    jobs: list[Job],
    add_noise_: bool,
    nonnegative: bool,
) -> tuple[DataFrame | None, DataFrame]:
    """The released table, noised, selected and post-processed on the driver, in one partition
    (None when there are more cells or keys than the driver takes, ``DRIVER_MAX_CELLS``), and
    ``cells`` computed, for Spark's way in that case.

    ``cells``: the exact aggregates by cell identity (for selection, those that reach the
    pre-threshold). They are collected and joined by identity with the keys: ``keys`` itself, or
    for the data's own keys what the job scanning the input alongside collects (the caller
    cancels it if the cells cannot be collected). ``schema``: the input's, for the key types.
    """
    limit = noising.DRIVER_MAX_CELLS
    spark = cells.sparkSession

    # The cells of validated input lie among the declared cells selection chooses from, no more
    # than the driver takes: Spark's way cannot follow, so the cells need not be kept for it.
    # Otherwise they are computed once: collected here, or joined in Spark if too many.
    for_spark = plan.selection is None or not isinstance(keys, pa.Table)

    def collect_cells() -> pa.Table:
        nonlocal cells
        if for_spark:
            cells = keep(cells, eager=False)
        return to_arrow(cells.limit(limit + 1))

    found = collect_cells()
    key_table = keys if isinstance(keys, pa.Table) else keys.result()
    if found.num_rows > limit or key_table.num_rows > limit:
        return None, cells
    on = [CELL_ID]
    if plan.selection is None:  # every public key; cells of the data outside them stay behind
        joined = key_table.join(found, keys=on, join_type="left outer")
    else:
        joined = found.join(key_table, keys=on, join_type="inner")
        if not isinstance(keys, pa.Table) and joined.num_rows != found.num_rows:
            raise InternalError("a cell of the bounded data has no dimension values")
    released = _noise_and_select(plan, joined, secrets, jobs, add_noise_)
    table, fields = finalize_table(released, plan, nonnegative)
    dims = [T.StructField(d, schema[d].dataType) for d in plan.table.dimensions]
    return driver_frame(spark, table, T.StructType([*dims, *fields])), cells


def _noise_and_select(
    plan: TablePlan,
    cells: pa.Table,
    secrets: Secrets,
    jobs: list[Job],
    add_noise_: bool,
) -> pa.Table:
    """Cells on the driver, noised and selected by the plan's selection.

    ``cells``: the dimension values and exact measures of each cell (nulls count as 0).
    """
    dims = list(plan.table.dimensions)
    measures = all_measures(plan)
    sel = plan.selection
    columns = {m: pc.fill_null(cells[m], 0).cast(pa.int64()) for m in measures}
    offset = None if sel is None else _statistic_offset(sel)
    if offset is not None:
        columns[SELECT] = pc.subtract(columns[UNITS], offset)
    table = pa.table({**{d: cells[d] for d in dims}, **columns})
    if add_noise_:
        table = table.append_column(CELL, cell_digests(cells, dims))
        table = noise_on_driver(table, jobs, secrets.key)
    return table if sel is None else _selected(table, sel)


def release_levels(
    df: DataFrame,
    plan: TablePlan,
    unit: str,
    secrets: Secrets,
    public_keys: PublicKeys | None,
    confidence: float,
) -> dict[str, DataFrame]:
    """The released tables of a table with consistent levels, by output name, coarsest first.

    Every level is measured from the same bounded rows: the finest cells are aggregated once, and
    each coarser level is the exact sum of its finest cells, then noised on its own. Per metric,
    the noisy levels become consistent (GLS), non-negative and integral
    (:mod:`pipelines.consistency`). Each cell carries its GLS standard deviation and the normal
    ``confidence`` half-width: exact for the GLS estimate, approximate for the clamped and rounded
    value released.
    """
    t = plan.table
    dims = list(t.dimensions)
    if dims and public_keys is None:
        raise ValueError(f"table {t.name!r} has public partitions but no key DataFrame")
    metrics = [m.kind for m in t.metrics]  # count, privacy_unit_count
    exact_columns = {"count": COUNT, "privacy_unit_count": UNITS}
    cells = bounded_aggregates(df, plan, unit, secrets)
    keys = (
        cell_key_frame(public_keys.frame, dims, secrets, t.name)
        if public_keys is not None
        else None
    )
    # output-sized; kept so that the levels do not bound the input again
    finest = keep(join_public(cells, keys, dims, [COUNT, UNITS]))
    outputs = t.outputs
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    per_metric: dict[str, list[DataFrame]] = {m: [] for m in metrics}
    for i, (_, level_dims) in enumerate(outputs):
        finest_level = i == len(outputs) - 1
        level = (
            finest
            if finest_level
            else finest.groupBy(*level_dims).agg(
                *[F.sum(c).cast("long").alias(c) for c in (COUNT, UNITS)]
            )
        )
        names = {
            m: exact_columns[m] if finest_level else level_column(exact_columns[m], i)
            for m in metrics
        }
        level = level.select(
            *level_dims, *[F.col(exact_columns[m]).alias(names[m]) for m in metrics]
        )
        jobs = [NoiseJob(plan.noise_for(names[m]), f"{t.name}/{names[m]}") for m in metrics]
        # computed here: every consistent level is read from these measurements
        noisy = add_noise(level, level_dims, jobs, secrets.key)
        for m in metrics:
            sd, _ = plan.noise_for(names[m]).sd()
            per_metric[m].append(
                noisy.select(
                    *level_dims,
                    F.col(names[m]).cast("double").alias(NOISY),
                    F.lit(sd * sd).alias(NOISE_VAR),
                )
            )
    level_keys = [list(d) for _, d in outputs]
    results: list[list[DataFrame]] = [[] for _ in outputs]
    for m in metrics:
        consistent = integer_levels(gls_levels(per_metric[m], level_keys), level_keys)
        sd_col, hw_col = error_columns(m)
        for i, frame in enumerate(consistent):
            cell_sd = F.sqrt(F.col(ESTIMATE_VAR))
            results[i].append(
                frame.select(
                    *level_keys[i],
                    F.col(CONSISTENT).alias(m),
                    cell_sd.alias(sd_col),
                    (cell_sd * F.lit(z)).alias(hw_col),
                )
            )
    out: dict[str, DataFrame] = {}
    for i, (name, _) in enumerate(outputs):
        joined = results[i][0]
        for other in results[i][1:]:
            joined = (
                joined.join(other, on=level_keys[i]) if level_keys[i] else joined.crossJoin(other)
            )
        columns = [c for m in metrics for c in (m, *error_columns(m))]
        out[name] = joined.select(*level_keys[i], *columns)
    return out
