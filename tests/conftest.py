"""One local SparkSession for the whole run, tuned for 2 cores (see the README's test notes)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("dprelease-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.sql.dataFrameDebugging.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "2g")
        .config("spark.driver.extraJavaOptions", " ".join(JVM_OPTIONS))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    _JVM_PEAKS.update(_code_cache_peaks(session))
    session.stop()


@pytest.fixture(autouse=True, scope="module")
def _nothing_left_cached(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test module leaves the shared session's cache as it found it: a frame left cached
    makes later tests (which check that releases keep nothing cached) depend on the order."""
    yield
    if "spark" not in request.fixturenames:
        return
    session = request.getfixturevalue("spark")
    cached = session._jsparkSession.sharedState().cacheManager().isEmpty()
    assert cached, f"{request.module.__name__} left frames cached in the shared session"


# C1 only: the suite runs thousands of short stages, and C2's compilations cost more than they
# save on 2 cores. C1-only shrinks the code cache to 48 MB, and since JDK 20 (no sweeper) code
# is freed only when its classes unload; the suite's generated classes filled it on Java 21
# ("Out of space in CodeCache for adapters"), so it is given the tiered default's size back.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=240m")
# The share of a code cache pool the suite may reach at its peak before the run fails: a suite
# that grows past it is near the crash above on some JDK, and the fix is here, not in a rerun.
CODE_CACHE_HEADROOM = 0.75
_JVM_PEAKS: dict[str, tuple[int, int]] = {}


def _code_cache_peaks(session: Any) -> dict[str, tuple[int, int]]:
    """Peak use and size, in bytes, of each of the driver JVM's code cache pools."""
    factory = session.sparkContext._jvm.java.lang.management.ManagementFactory
    peaks = {}
    for pool in factory.getMemoryPoolMXBeans():
        name = str(pool.getName())
        if name.startswith("Code"):
            peaks[name] = (int(pool.getPeakUsage().getUsed()), int(pool.getUsage().getMax()))
    return peaks


def _over_headroom() -> list[str]:
    return [name for name, (peak, size) in _JVM_PEAKS.items() if peak > CODE_CACHE_HEADROOM * size]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _over_headroom():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, (peak, size) in sorted(_JVM_PEAKS.items()):
        terminalreporter.write_line(
            f"driver JVM {name}: peak {peak / 2**20:.1f} MiB of {size / 2**20:.0f} MiB"
        )
    for name in _over_headroom():
        terminalreporter.write_line(
            f"{name} passed {CODE_CACHE_HEADROOM:.0%} of its size at its peak: raise "
            "-XX:ReservedCodeCacheSize in JVM_OPTIONS (tests/conftest.py)",
            red=True,
        )


@pytest.fixture(autouse=True)
def _free_kept_frames() -> Iterator[None]:
    """Frames a test keeps by calling the pipelines directly (pipelines.persistence.keep) are
    freed when it ends, as a release frees its own: the session is shared by the whole suite."""
    from pipelines.persistence import release_scope

    with release_scope():
        yield


@pytest.fixture(scope="session")
def demo_path(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """20,000 rows of demo microdata written once for the session."""
    from pipelines.demo_data import demo_microdata

    path = str(tmp_path_factory.mktemp("demo") / "microdata")
    demo_microdata(spark, 20_000, partitions=2).write.parquet(path)
    return path


def base_spec(**overrides: Any) -> dict[str, Any]:
    """A small valid spec document; tests change one key at a time."""
    doc: dict[str, Any] = {
        "input": {"path": "unused", "format": "parquet", "privacy_unit": "pid"},
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "output": {"path": "unused"},
        "domains": {"g": ["a", "b", "c"]},
        "tables": [
            {
                "name": "t",
                "dimensions": ["g"],
                "partitions": {"type": "public", "keys": "cross_product"},
                "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
                "metrics": ["count", {"sum": "v", "lower": 0, "upper": 10}],
            }
        ],
    }
    doc.update(overrides)
    return doc


def without_temp_paths(text: str, tmp_path: Path) -> str:
    """``text`` with the session's temporary root (``.../pytest-<n>``, whose number grows with
    every run on a machine) written as ``<tmp>``: a leak check looking for an exact count must
    not find it in a directory name."""
    root = next((p for p in tmp_path.parents if re.fullmatch(r"pytest-\d+", p.name)), tmp_path)
    return text.replace(str(root), "<tmp>")
