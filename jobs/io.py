"""Reading the microdata and public key files named in the spec."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dp_ops.errors import SHOW_ERRORS_VARIABLE, InputDataError, InternalError, show_errors
from pipelines import sql_text as sql
from pipelines.input_checks import CSV_MALFORMED, CSV_RECORD
from pipelines.spec import InputSpec


def read_table(
    spark: SparkSession,
    path: str,
    fmt: str,
    header: bool = True,
    what: str = "input",
    flag_malformed: bool = False,
) -> DataFrame:
    """The table at ``path``; InputDataError (exit 3) naming the path, never the contents, when
    it does not exist or cannot be read as ``fmt``.

    ``flag_malformed`` (CSV): keep records with too many or too few fields, flagged in
    :data:`~pipelines.input_checks.CSV_MALFORMED` (and as read in ``CSV_RECORD``), so that
    validation fails or quarantines them; Spark would otherwise drop extra fields silently.
    """
    try:
        if fmt != "csv":
            return spark.read.parquet(path)
        reader = spark.read.option("header", str(header).lower())
        inferred = reader.option("inferSchema", "true").csv(path)
        if not flag_malformed or not inferred.columns:
            return inferred
        schema = inferred.schema.add(CSV_RECORD, "string")
        df = (
            reader.schema(schema)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CSV_RECORD)
            .csv(path)
        )
        # the flag reads every column: Spark refuses a query of the corrupt-record column
        # alone on a raw CSV file, and Spark 3.5 parses only the columns a query needs, so a
        # record with a field too few or too many is flagged only when all are needed
        every = [F.col(sql.name(c)) for c in inferred.columns]  # quoted: names may hold dots
        malformed = F.when(F.col(CSV_RECORD).isNotNull(), F.lit(1)).otherwise(F.hash(*every) * 0)
        return df.withColumn(CSV_MALFORMED, malformed)
    except AnalysisException as exc:
        reason = "does not exist" if "PATH_NOT_FOUND" in str(exc) else f"cannot be read as {fmt}"
        raise InputDataError(f"{what}: {path!r} {reason}; check the path and format") from None
    except Exception:  # Spark's text can quote the file's bytes
        if show_errors():
            raise
        raise InputDataError(
            f"{what}: {path!r} cannot be read as {fmt}; check input.format and the files "
            f"(set {SHOW_ERRORS_VARIABLE}=1 on a private console to see Spark's message)"
        ) from None


def read_catalog_table(spark: SparkSession, name: str) -> DataFrame:
    """The catalog table ``name`` (``db.t``), from the session's catalog; InputDataError (exit 3)
    naming the table, never its contents, when it does not exist or cannot be read."""
    try:
        df = spark.read.table(name)
        df.schema  # noqa: B018  (Spark Connect resolves the name only when asked)
        return df
    except AnalysisException as exc:
        missing = any(m in str(exc) for m in ("TABLE_OR_VIEW_NOT_FOUND", "SCHEMA_NOT_FOUND"))
        reason = "does not exist in the session's catalog" if missing else "cannot be read"
        raise InputDataError(
            f"input.table: {name!r} {reason}; check the name, its database and the catalog the "
            "Spark profile configures (spark.sql.catalog.*, the Hive metastore)"
        ) from None
    except Exception:  # Spark's text can quote the table's data
        if show_errors():
            raise
        raise InputDataError(
            f"input.table: {name!r} cannot be read (set {SHOW_ERRORS_VARIABLE}=1 on a private "
            "console to see Spark's message)"
        ) from None


def read_input(spark: SparkSession, spec: InputSpec) -> DataFrame:
    """The input the spec names: a catalog table (``input.table``) or files (``input.path``)."""
    if spec.table is not None:
        return read_catalog_table(spark, spec.table)
    if spec.path is None:
        raise InternalError("an input spec names a path or a table")
    return read_table(spark, spec.path, spec.format, spec.csv_header, flag_malformed=True)


def input_fingerprint(df: DataFrame, key: bytes) -> str:
    """HMAC-SHA256, under an operator-held key, of the input's file names, sizes and mtimes.

    Keyed so that it reveals nothing about the contents: without the key nobody can test a guess
    of the data against it; with the key the operator can check which files a release used.
    """
    entries: list[str] = []
    for uri in sorted(df.inputFiles()):
        local = uri[len("file:") :] if uri.startswith("file:") else None
        if local is not None:
            local = "/" + local.lstrip("/")
        if local and os.path.exists(local):
            st = os.stat(local)
            entries.append(f"{Path(local).name}\t{st.st_size}\t{st.st_mtime_ns}")
        else:
            entries.append(uri)
    return hmac.new(key, "\n".join(entries).encode(), hashlib.sha256).hexdigest()
