"""SparkSession for the jobs, configured from a Spark profile in ``conf/spark/``."""

from __future__ import annotations

import os
import re
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
    # PySpark otherwise records the Python call site of every DataFrame function it is handed:
    # several JVM round trips each, about a third of the time a release spends building its plan
    "spark.python.sql.dataFrameDebugging.enabled": "false",
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


def local_cores(master: str) -> int | None:
    """The cores of a ``local``, ``local[N]``, ``local[*]`` or ``local[N,F]`` master; else None."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master.strip())
    if m is None:
        return None
    if m.group(1) is None:
        return 1
    return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))


def session_conf(master: str | None, profile: dict[str, str]) -> dict[str, str]:
    """The settings of a new session: the defaults, then the profile's, which win.

    In local mode without a profile setting, shuffles get two partitions per core instead of
    Spark's 200, which suit a cluster: after bounding a release's shuffles are small, and on a
    laptop most of 200 tasks would only add scheduling.
    """
    conf = dict(DEFAULTS)
    cores = local_cores(master) if master else None
    if cores is not None:
        conf["spark.sql.shuffle.partitions"] = str(2 * cores)
    return {**conf, **profile}


def get_session(
    master: str | None = None, profile: str | Path | None = None, app: str = "dprelease"
) -> SparkSession:
    """The active session (under spark-submit) or a new one with the profile's settings."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    if not master and not _under_spark_submit():
        master = os.environ.get("DPRELEASE_MASTER", "local[*]")
    if master:
        builder = builder.master(master)
    for key, value in session_conf(master, load_profile(profile)).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("DPRELEASE_SPARK_LOG_LEVEL", "WARN"))
    return spark
