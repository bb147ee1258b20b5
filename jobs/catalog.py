"""Released tables registered as catalog tables (``output.catalog_database``).

After a release is committed (its manifest written), each released table is registered as an
external table ``<database>.<table>`` over the release's files, with the table property
``dprelease.release_id``; a later release of the same tables re-points them to itself. The
manifest stays the authority: a registration only points at a committed release, and dropping
a registered table never deletes files (it is external).

Checked before anything is charged (:func:`check_catalog`): the database exists, and no table of
that name exists that dprelease did not register (it would be replaced otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from pyspark.sql import SparkSession

from dp_ops.errors import SpecError
from jobs.storage import scheme
from pipelines.spec import ReleaseSpec

log = logging.getLogger("dprelease")

PROPERTY = "dprelease.release_id"


def _quoted(name: str) -> str:
    return ".".join(f"`{part}`" for part in name.split("."))


def _outputs(spec: ReleaseSpec) -> list[str]:
    return [name for t in spec.tables for name, _ in t.outputs]


def _registered_release(spark: SparkSession, full: str) -> str | None:
    """The release id a registered table points at; "" for a table dprelease did not register."""
    rows = spark.sql(f"SHOW TBLPROPERTIES {full}").collect()  # safe: catalog metadata only
    values = {str(r[0]): str(r[1]) for r in rows}
    return values.get(PROPERTY, "")


def check_catalog(spark: SparkSession, spec: ReleaseSpec) -> None:
    """SpecError (exit 2) when the release's tables cannot be registered where the spec says."""
    database = spec.output.catalog_database
    if database is None:
        return
    if not spark.catalog.databaseExists(database):
        raise SpecError(
            f"output.catalog_database: database {database!r} does not exist; create it "
            f"(CREATE DATABASE {database}) or remove the key"
        )
    for name in _outputs(spec):
        full = f"{_quoted(database)}.`{name}`"
        if spark.catalog.tableExists(f"{database}.{name}") and not _registered_release(spark, full):
            raise SpecError(
                f"output.catalog_database: {database}.{name} exists and was not registered by "
                "dprelease; it would be replaced. Drop it, or register in another database"
            )


def _location(path: str) -> str:
    """A table's location for the catalog: a URI as it is, a local path made absolute."""
    if scheme(path) not in (None, "file"):
        return path
    local = path.removeprefix("file://") if path.startswith("file://") else path
    return str(Path(local).resolve())


def register(
    spark: SparkSession, spec: ReleaseSpec, release_id: str, tables: Iterable[tuple[str, str]]
) -> None:
    """Point ``<database>.<name>`` at each released table ``(name, path)`` of a committed
    release (idempotent: a table already pointing at this release is left as it is)."""
    database = spec.output.catalog_database
    if database is None:
        return
    using = "csv OPTIONS (header 'true')" if spec.output.format == "csv" else "parquet"
    for name, path in tables:
        full = f"{_quoted(database)}.`{name}`"
        if spark.catalog.tableExists(f"{database}.{name}"):
            current = _registered_release(spark, full)
            if current == release_id:
                continue
            if not current:
                raise SpecError(
                    f"output.catalog_database: {database}.{name} was not registered by dprelease"
                )
            spark.sql(f"DROP TABLE {full}")  # external: the files stay
        location = _location(path).replace("\\", "\\\\").replace("'", "\\'")
        spark.sql(
            f"CREATE TABLE {full} USING {using} LOCATION '{location}' "
            f"TBLPROPERTIES ('{PROPERTY}' = '{release_id}')"
        )
        log.info("catalog: %s.%s points at release %s", database, name, release_id)
