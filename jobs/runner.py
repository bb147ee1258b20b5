"""Run a release end to end: plan, check, bound, aggregate, select, noise, write, commit.

Order matters for privacy and for operators:

1. the release id is checked, and the plan (budget split, noise scales, thresholds, the 64-bit
   noise range) is computed from the spec alone;
2. the output location is checked (a writable directory, the release id's place free), a
   published release id is detected, and the ledger refuses a release that does not fit the
   dataset's remaining budget or reuses a release id for another spec or location, before any
   data is read (:func:`preflight`);
3. the input is validated (schema, then a great-expectations suite: nulls, NaN/inf, domains,
   the spec's own expectations); failing rows stop the release or are quarantined
   (``input.on_invalid``); then the ledger is charged, before any noise is drawn (a retry of a
   crashed attempt with the identical spec is not charged again);
4. each table is computed and written under the release's directory and checked;
5. the manifest, written last, commits the release (:mod:`jobs.writer`: no rename, on any
   Hadoop-compatible store), and the ledger records the commit and its location.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from dp_ops.errors import BudgetError, InternalError
from jobs import release_id as release_ids
from jobs import writer
from jobs.catalog import check_catalog, register
from jobs.config import spec_hash
from jobs.io import input_fingerprint, read_input, read_table
from jobs.ledger import Attempt, open_ledger
from jobs.progress import stage
from jobs.pyfiles import ship_to_connect
from jobs.series import SeriesState, check_order, series_period
from jobs.storage import Store, join, open_store, scheme
from pipelines import output_checks, validation
from pipelines.auto_bounds import resolve as resolve_bounds
from pipelines.partitions import (
    PublicKeys,
    cast_keys,
    convert_key,
    cross_product_keys,
    cross_rows,
    declared_cells,
    inline_keys,
    typed_domains,
)
from pipelines.persistence import release_scope
from pipelines.plan import (
    ReleaseCost,
    ReleasePlan,
    TablePlan,
    declared_cell_count,
    plan_release,
    plan_warnings,
)
from pipelines.release import Secrets, release_levels, release_table
from pipelines.report import privacy_report
from pipelines.series import SeriesPlan, plan_series, series_budget, series_report
from pipelines.spec import InputSpec, PrivatePartitions, PublicPartitions, ReleaseSpec, TableSpec
from pipelines.suite import SuiteKeys, release_suite
from pipelines.validation import validate_input

log = logging.getLogger("dprelease")


@dataclass
class Outcome:
    release_id: str
    path: str
    """The release's directory: a local path or a URI, as ``output.path`` gave it."""
    already_released: bool = False
    tables: dict[str, str] = field(default_factory=dict)


def public_keys(
    spark: SparkSession, spec: ReleaseSpec, table: TableSpec, df: DataFrame
) -> PublicKeys | None:
    p = table.partitions
    if not isinstance(p, PublicPartitions) or not table.dimensions:
        return None
    dims = table.key_dimensions  # a suite's keys: its finest geographic units
    if p.source == "cross_product":
        domains = [(d, spec.domain(d) or ()) for d in dims]
        return cross_product_keys(spark, domains, df.schema)
    if p.source == "inline":
        return inline_keys(spark, dims, p.rows, df.schema)
    keys = read_table(spark, p.path or "", p.format, what=f"table {table.name!r} partitions.path")
    return cast_keys(keys, df.schema, dims)


def candidate_cells(spec: ReleaseSpec, table: TableSpec, df: DataFrame) -> pa.Table | None:
    """For private selection: every cell the validated input can hold, on the driver, when each
    dimension has a declared domain and their cross product is small (else None)."""
    if not isinstance(table.partitions, PrivatePartitions) or not table.dimensions:
        return None
    domains = []
    for d in table.dimensions:
        values = spec.domain(d)
        if values is None:  # an undeclared dimension: the data's cells are scanned
            return None
        domains.append((d, values))
    return declared_cells(domains, df.schema)


def table_frame(
    spec: ReleaseSpec, tplan: TablePlan, df: DataFrame, secrets: Secrets, keys: PublicKeys | None
) -> DataFrame:
    """The released DataFrame of one planned table (noise keyed by ``secrets``); ``keys``:
    its public keys (:func:`public_keys`)."""
    unit = spec.input.privacy_unit
    candidates = candidate_cells(spec, tplan.table, df)
    return release_table(
        df, tplan, unit, secrets, keys, spec.output.nonnegative_counts, candidates=candidates
    )


def output_keys(
    spark: SparkSession,
    table: TableSpec,
    keys: PublicKeys | None,
    domains: dict[str, list[Any]],
    dims: tuple[str, ...],
    df: DataFrame,
) -> PublicKeys | None:
    """The keys one output of ``table`` must release, each once: the table's public keys, except
    for a suite, whose outputs hold every unit of their level with every cell of their
    attributes (the declared domains)."""
    if keys is None or not table.geography:
        return keys
    if not dims:  # the total: one row, no keys to compare
        return None
    geo = [d for d in dims if d in table.geography[-1]]
    attributes = [(d, domains[d]) for d in dims if d not in geo]
    units = keys.frame.select(*geo).distinct()
    unit_rows = None
    if keys.rows is not None and geo:
        unit_rows = keys.rows.select(geo).group_by(geo).aggregate([])
    if not attributes:
        return PublicKeys(units, unit_rows)
    grid = cross_product_keys(spark, attributes, df.schema)
    if not geo:
        return grid
    rows = None
    if unit_rows is not None and grid.rows is not None:
        rows = cross_rows(unit_rows, grid.rows)
    return PublicKeys(units.crossJoin(grid.frame), rows)


def declared_domains(spec: ReleaseSpec, table: TableSpec, df: DataFrame) -> dict[str, list[Any]]:
    """The declared domains of ``table``'s dimensions, converted to the input's types."""
    return {
        d: [convert_key(v, df.schema[d].dataType, f"domains.{d}") for v in values]
        for d in table.dimensions
        if (values := spec.domain(d)) is not None
    }


def check_output(
    spark: SparkSession,
    spec: ReleaseSpec,
    table: TableSpec,
    keys: PublicKeys | None,
    domains: dict[str, list[Any]],
    released: DataFrame,
    store: Store,
    final: str,
    output: tuple[str, tuple[str, ...]],
) -> int:
    """Read one written output of ``table`` back and check it (InternalError aborts the commit);
    its size. ``keys``, ``domains``: the table's public keys and declared domains; ``final``:
    the release's directory on ``store``; ``output``: (name, dimensions) of the output."""
    path = join(final, output[0])
    arrow_keys = keys.rows if keys is not None else None
    if (
        store.kind == "local"
        and spec.output.format == "parquet"
        and (keys is None or arrow_keys is not None)
        and all(output_checks.arrow_type(f.dataType) for f in released.schema.fields)
        and _written_rows(path) <= ARROW_CHECK_MAX_ROWS
    ):  # small: read on the driver, checked in milliseconds instead of a Spark job
        return output_checks.check_released_arrow(
            pq.read_table(path),
            released.schema,
            table,
            arrow_keys,
            domains,
            spec.output.nonnegative_counts,
            output,
        )
    reader = spark.read
    if spec.output.format == "csv":
        reader = reader.schema(released.schema).option("header", "true").option("mode", "FAILFAST")
        staged = reader.csv(path)
    else:
        staged = reader.parquet(path)
    return output_checks.check_released(
        staged,
        released.schema,
        table,
        keys.frame if keys is not None else None,
        domains,
        spec.output.nonnegative_counts,
        output,
    )


ARROW_CHECK_MAX_ROWS = 1_000_000
"""Written local tables up to this many rows are read back on the driver (Arrow) to be checked."""


def _written_rows(path: str) -> int:
    """The rows of a written local Parquet table, from its files' footers (the metadata alone)."""
    return sum(pq.read_metadata(f).num_rows for f in Path(path).glob("*.parquet"))


def table_frames(
    spec: ReleaseSpec, tplan: TablePlan, df: DataFrame, secrets: Secrets, keys: PublicKeys | None
) -> dict[str, DataFrame]:
    """Every released DataFrame of one planned table by output name (one, or one per level);
    ``keys``: the table's public keys (:func:`public_keys`)."""
    unit = spec.input.privacy_unit
    t = tplan.table
    if t.geography:
        if keys is None:
            raise InternalError(f"suite {t.name!r} has no public keys")
        domains = typed_domains([(a, spec.domain(a) or ()) for a in t.attributes], df.schema)
        suite_keys = SuiteKeys(keys.frame, tuple((a, tuple(v)) for a, v in domains), keys.rows)
        return release_suite(df, tplan, unit, secrets, suite_keys, spec.output.confidence)
    if not t.levels:
        return {t.name: table_frame(spec, tplan, df, secrets, keys)}
    return release_levels(df, tplan, unit, secrets, keys, spec.output.confidence)


def versions(spark: SparkSession) -> dict[str, str]:
    try:
        own = metadata.version("dprelease")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {
        "dprelease": own,
        "spark": spark.version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def _fingerprint_key() -> tuple[bytes, bool]:
    env = os.environ.get("DPRELEASE_FINGERPRINT_KEY")
    if env:
        return bytes.fromhex(env), False
    return os.urandom(32), True


def write_table(df: DataFrame, path: str, fmt: str) -> None:
    w = df.write.mode("error")  # "error": the alias the Connect client knows too
    if fmt == "csv":
        w.option("header", "true").csv(path)
    else:
        w.parquet(path)


def planned(spec: ReleaseSpec, warn: bool = True) -> ReleasePlan:
    """The release's plan (:func:`plan_release`); ``warn``: log its warnings
    (:func:`plan_warnings`: bounds no person reaches, noise far above one row)."""
    plan = plan_release(spec)
    if warn:
        for warning in plan_warnings(plan):
            log.warning("plan: %s", warning)
    return plan


@dataclass(frozen=True)
class Preflight:
    """What :func:`preflight` found: the plan, the attempt, and whether it is already done."""

    plan: ReleasePlan
    attempt: Attempt
    published: bool
    """The release id is published at this location with this spec: nothing to do."""
    store: Store | None
    """Where the release goes; None when only a Spark session can reach it (checked later)."""
    series: SeriesPlan | None = None
    """For a period of a series: the series' plan (``plan`` is its node plan)."""
    position: int = 0
    """For a period of a series: its place, 1 .. horizon."""


NOTHING = ReleaseCost(Fraction(0), Fraction(0), Fraction(0))
"""What a period of a series is charged: the series was charged for all of them."""


def series_attempt(spec: ReleaseSpec) -> Attempt:
    """The ledger's record of a series (charged once, at its first period)."""
    if spec.series is None:
        raise InternalError("series_attempt of a spec without a series")
    location = writer.location_name(spec.output.path, f".private/series/{spec.series.name}")
    # every period reads its own input: where it is does not change the series
    same = replace(spec, input=replace(spec.input, path=None, table=None))
    return Attempt(f"series:{spec.series.name}", spec_hash(same), location)


def _store(spec: ReleaseSpec, spark: SparkSession | None) -> Store | None:
    """The output's store; None before Spark starts for a URI only Hadoop can reach."""
    output = spec.output.path
    if spark is None and scheme(output) not in (None, "file"):
        return None
    return open_store(output, spark)


def preflight(
    spec: ReleaseSpec,
    release_id: str,
    warn: bool = True,
    spark: SparkSession | None = None,
) -> Preflight:
    """Everything that can be checked before reading data or charging, without Spark.

    SpecError (exit 2): a malformed release id, a plan whose noise leaves the 64-bit range, an
    output location that cannot take the release. BudgetError (exit 4): the release does not fit
    the dataset's remaining budget, or its id is bound to another spec or location (the
    ledger's rules, :meth:`jobs.ledger.Ledger.admit`; without a ledger, the manifest of a
    published release of this id). ``warn``: log the plan's warnings (:func:`plan_warnings`).
    ``spark``: the session, which reaches URIs through Hadoop; without it, the location of a URI
    other than ``file://`` is checked when the release runs.
    """
    release_ids.check(release_id)
    t = series_period(spec, release_id)[1] if spec.series is not None else 0
    plan = planned(spec, warn)
    splan = plan_series(spec, plan) if spec.series is not None else None
    store = _store(spec, spark)
    final = writer.location_name(spec.output.path, release_id)
    attempt = Attempt(release_id, spec_hash(spec), final)
    published = False
    if store is not None:
        writer.check_location(store, spec.output.path, release_id)
        manifest = writer.read_manifest(store, spec.output.path, release_id)
        published = manifest is not None
        if manifest is not None and manifest.get("spec_sha256") != attempt.spec_sha256:
            raise BudgetError(
                f"release id {release_id!r} is published at {final!r} from another spec; a "
                "release id names one release. Give this spec a new release id."
            )
    if store is not None and not published:
        check_order(store, spec, t)
    if spec.ledger is not None:
        ledger = open_ledger(spec.ledger.path)
        if splan is not None:
            ledger.admit(spec.ledger.dataset, series_attempt(spec), splan.cost)
        admission = ledger.admit(
            spec.ledger.dataset, attempt, plan.cost if splan is None else NOTHING
        )
        if admission.committed_at is not None and not published:
            raise BudgetError(
                f"ledger: release id {release_id!r} was published at {admission.committed_at!r}, "
                "which holds no manifest now; drawing it again would release a second draw "
                "uncharged. Restore the release, or use a new release id."
            )
    return Preflight(plan, attempt, published, store, splan, t)


def period_input(spec: ReleaseSpec, release_id: str) -> InputSpec:
    """The input of a release: for a period of a series, ``{period}`` in ``input.path``
    replaced by the period (``data/sales/{period}.parquet``)."""
    if spec.series is None or spec.input.path is None:
        return spec.input
    period, _ = series_period(spec, release_id)
    return replace(spec.input, path=spec.input.path.replace("{period}", period))


def run_release(
    spark: SparkSession,
    spec: ReleaseSpec,
    release_id: str | None = None,
    input_df: DataFrame | None = None,
    warn: bool = True,
) -> Outcome:
    """Run the release described by ``spec``; see the module docstring for the order of steps.
    ``warn``: log the plan's warnings (False when the caller's own preflight did)."""
    rid = release_id or release_ids.new()
    with stage("plan", spark):
        checked_first = preflight(spec, rid, warn, spark)
    plan, attempt, store = checked_first.plan, checked_first.attempt, checked_first.store
    splan = checked_first.series
    if store is None:
        raise InternalError("a session reaches every output location")
    for t in plan.tables:
        sel = t.selection
        log.debug(
            "plan %s: %s noise, epsilon %.6g, delta %.3g, rho %s, selection %s, measurements %s",
            t.table.name,
            t.family,
            float(t.epsilon),
            float(t.delta),
            f"{float(t.zcdp_cost):.6g}" if t.zcdp_cost is not None else "-",
            f"{sel.strategy} (threshold {sel.threshold})" if sel else "public keys",
            ", ".join(
                f"{m.column}: {m.mechanism} {float(m.parameter):.6g}" for m in t.measurements
            ),
        )
    final = attempt.location
    check_catalog(spark, spec)
    if checked_first.published:
        if spec.ledger is not None:  # a crash between the commit and the ledger's record
            open_ledger(spec.ledger.path).commit(spec.ledger.dataset, attempt)
        log.info("release %s already exists at %s: nothing to do, no budget spent", rid, final)
        outputs = [name for t in spec.tables for name, _ in t.outputs]
        register(spark, spec, rid, [(n, join(final, n)) for n in outputs])  # after a crash
        return Outcome(rid, final, already_released=True)
    cost = plan.cost
    log.info(
        "release %s: %s over %d table(s)%s",
        rid,
        ", ".join(
            f"{k} {float(v):.6g}"
            for k, v in (("epsilon", cost.epsilon), ("delta", cost.delta), ("rho", cost.rho))
            if v is not None
        ),
        len(plan.tables),
        f" (period {checked_first.position} of series {spec.series.name}, whose whole cost this is)"
        if spec.series is not None
        else "",
    )
    state = SeriesState(spark, store, spec) if splan is not None else None
    if state is not None and splan is not None:
        state.check_tree(splan)  # before anything is read or charged
    with stage("read and validate input", spark):
        raw = input_df if input_df is not None else read_input(spark, period_input(spec, rid))
        checked = validate_input(raw, spec)
        df = checked.valid  # which expectations failed goes to the operator report only
    quarantine = None
    if checked.quarantined is not None:
        with stage("quarantine invalid rows", spark):
            quarantine = writer.write_quarantine(store, checked.quarantined, spec.output.path, rid)
        log.warning(
            "validation: rows failing expectations were quarantined in %s; the operator report "
            "in %s says which expectations failed",
            quarantine,
            writer.private_dir(store, spec.output.path),
        )
    if spec.ledger is not None:
        ledger = open_ledger(spec.ledger.path)
        if splan is not None:
            series_admission = ledger.charge(spec.ledger.dataset, series_attempt(spec), splan.cost)
            log.info(
                "ledger: series %s %s",
                spec.series.name if spec.series else "",
                "was charged at an earlier period" if series_admission.charged else "charged",
            )
        admission = ledger.charge(
            spec.ledger.dataset, attempt, plan.cost if splan is None else NOTHING
        )
        log.info(
            "ledger: release %s %s",
            rid,
            "was recorded by an earlier attempt"
            if admission.charged
            else ("recorded, at no further cost" if splan is not None else "charged"),
        )
    ship_to_connect(spark)  # the workers of a Connect server run our code
    secrets = Secrets.new()
    fp_key, fp_generated = _fingerprint_key()
    outcome = Outcome(rid, final)
    released_cells: dict[str, int] = {}
    timings: dict[str, float] = {}
    if state is not None:
        df = state.admitted(df, spec.input.privacy_unit, checked_first.position)
    with writer.release_attempt(store, spec.output.path, rid) as written, release_scope():
        resolved = []
        for tplan in plan.tables:
            name = tplan.table.name
            start = time.monotonic()
            if tplan.table.auto_bounds:
                with stage(f"table {name}: choose its auto bounds privately", spark):
                    tplan = resolve_bounds(
                        df,
                        tplan,
                        spec.input.privacy_unit,
                        secrets,
                        declared_cell_count(spec, tplan.table),
                    )
            resolved.append(tplan)
            keys = public_keys(spark, spec, tplan.table, df)  # for the release and the checks
            with stage(f"table {name}: bound, aggregate, select, noise, write", spark):
                if state is not None and splan is not None:
                    frames = {
                        name: state.table_frame(
                            tplan,
                            splan.depth,
                            checked_first.position,
                            df,
                            spec.input.privacy_unit,
                            secrets,
                            keys,
                            spec.output.nonnegative_counts,
                        )
                    }
                else:
                    frames = table_frames(spec, tplan, df, secrets, keys)
                for out_name, released in frames.items():
                    writer.check_claim(store, written)
                    write_table(released, join(written, out_name), spec.output.format)
            timings[name] = round(time.monotonic() - start, 3)
            with stage(f"table {name}: check the written table", spark):
                dims = dict(tplan.table.outputs)
                domains = declared_domains(spec, tplan.table, df)
                for out_name, released in frames.items():
                    output = (out_name, dims[out_name])
                    expected = output_keys(spark, tplan.table, keys, domains, output[1], df)
                    released_cells[out_name] = check_output(
                        spark,
                        spec,
                        tplan.table,
                        expected,
                        domains,
                        released,
                        store,
                        written,
                        output,
                    )
                    outcome.tables[out_name] = join(final, out_name)
        plan = ReleasePlan(spec, tuple(resolved))  # with the bounds chosen by the release
        manifest = build_manifest(spark, spec, plan, rid, released_cells, raw, fp_key)
        if splan is not None:
            conf = spec.output.confidence
            manifest["budget"] = series_budget(spec, splan)
            manifest["series"] = series_report(splan, checked_first.position, conf)
        writer.write_manifest(store, written, manifest)
    report: dict[str, Any] = {
        "release_id": rid,
        "stage_seconds": timings,
        "validation": [{"expectation": n, "passed": ok} for n, ok in checked.verdict.items()],
        "quarantine": str(quarantine) if quarantine is not None else None,
    }
    if fp_generated:
        report["fingerprint_key_hex"] = fp_key.hex()
    writer.write_report(store, spec.output.path, rid, report)
    if spec.ledger is not None:
        open_ledger(spec.ledger.path).commit(spec.ledger.dataset, attempt)
    log.info("release %s committed at %s", rid, final)
    register(spark, spec, rid, outcome.tables.items())
    return outcome


def build_manifest(
    spark: SparkSession,
    spec: ReleaseSpec,
    plan: ReleasePlan,
    rid: str,
    released_cells: dict[str, int],
    df: DataFrame,
    fp_key: bytes,
) -> dict[str, Any]:
    privacy = privacy_report(plan)
    for entry in privacy["tables"]:
        entry["released_cells"] = released_cells[entry["name"]]
        entry["path"] = entry["name"]
        entry["format"] = spec.output.format
        for level in entry.get("levels", {}).get("outputs", []):
            level["released_cells"] = released_cells[level["name"]]
            level["path"] = level["name"]
    return {
        "manifest_version": 1,
        "release_id": rid,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec_sha256": spec_hash(spec),
        "input_fingerprint": {
            "method": "HMAC-SHA256, operator-held key, over input file names, sizes, mtimes",
            "value": input_fingerprint(df, fp_key),
        },
        "privacy_unit": spec.input.privacy_unit,
        "input_validation": {
            "expectations": [r.name for r in validation.input_rules(spec, df.schema)],
            "on_invalid": spec.input.on_invalid,
            "validator": spec.input.validator,
            "note": "rows failing an expectation are not released; whether any did is "
            "reported to the operator only",
        },
        "ledger": {"dataset": spec.ledger.dataset} if spec.ledger else None,
        "budget": {k: privacy[k] for k in ("declared", "spent", "composition")},
        "tables": privacy["tables"],
        "notes": [
            "Intervals cover the noise added to the bounded aggregate, "
            "not bias from bounding or clamping.",
            "Counts clamped at zero and means are post-processed; their intervals are approximate.",
        ],
        "versions": versions(spark),
    }
