"""Reading the microdata and public key files named in the spec."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from dp_ops.errors import InputDataError
from pipelines.spec import InputSpec


def read_table(
    spark: SparkSession, path: str, fmt: str, header: bool = True, what: str = "input"
) -> DataFrame:
    try:
        if fmt == "csv":
            return (
                spark.read.option("header", str(header).lower())
                .option("inferSchema", "true")
                .csv(path)
            )
        return spark.read.parquet(path)
    except AnalysisException as exc:
        reason = "does not exist" if "PATH_NOT_FOUND" in str(exc) else f"cannot be read as {fmt}"
        raise InputDataError(f"{what}: {path!r} {reason}; check the path and format") from None


def read_input(spark: SparkSession, spec: InputSpec) -> DataFrame:
    return read_table(spark, spec.path, spec.format, spec.csv_header)


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
