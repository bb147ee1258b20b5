"""SparkSession for the jobs, configured from a Spark profile in ``conf/spark/``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import SparkSession

from dp_ops.errors import SpecError

DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def load_profile(path: str | Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        doc: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"spark profile: cannot read {str(path)!r}: {exc.strerror}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("conf", {}), dict):
        raise SpecError(f"spark profile {str(path)!r}: expected a mapping with a 'conf' mapping")
    return {str(k): str(v) for k, v in (doc.get("conf") or {}).items()}


def _under_spark_submit() -> bool:
    """spark-submit starts Python with a gateway to its JVM; its --master must then win."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or bool(os.environ.get("SPARK_ENV_LOADED"))


def get_session(
    master: str | None = None, profile: str | Path | None = None, app: str = "dprelease"
) -> SparkSession:
    """The active session (under spark-submit) or a new one with the profile's settings."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    if master:
        builder = builder.master(master)
    elif not _under_spark_submit():
        builder = builder.master(os.environ.get("DPRELEASE_MASTER", "local[*]"))
    for key, value in {**DEFAULTS, **load_profile(profile)}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("DPRELEASE_SPARK_LOG_LEVEL", "WARN"))
    return spark
