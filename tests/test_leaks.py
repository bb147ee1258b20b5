"""Leak canary: no marker from the data and no exact count in logs, errors, manifest or outputs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from jobs import spark_logs
from tests.conftest import without_temp_paths
from tests.test_jobs import _env

MARK_DIM = "MARKERDIM_7f3a"
MARK_PID = 4242424242
MARK_VALUE = 987654.321
_WHOLE = str(int(MARK_VALUE))
# the value as a number of its own (not digits inside a longer number, an id or a hex digest),
# whole, truncated or rounded, or in scientific notation
MARK_VALUE_RE = re.compile(
    rf"(?<![0-9A-Za-z.]){_WHOLE}(?:[.][0-9]+)?(?![0-9A-DF-Za-df-z])|{_WHOLE[0]}[.]{_WHOLE[1:]}"
)
MARK_QUARANTINED = "MARKERQUAR_c41d"  # in a row that fails an expectation
UNITS = 2987  # units in the common cell; rows in total: UNITS + 2


def _spark_count(count: int) -> re.Pattern[str]:
    """An exact count as Spark's loggers print one (a statistic, not a time or a size)."""
    return re.compile(rf"(?<![\w.]){count}(?![\w.])(?!\s*(?:ms|s\b|B\b|bytes|KiB|MiB))")


def _canary(spark: Any, tmp_path: Path, extra_env: dict[str, str]) -> dict[str, str]:
    """A release with planted markers, run by the console command with -v and ``extra_env``;
    every text it leaves (streams, manifest, released table, operator report)."""
    rows = [(i, "common", 1.5) for i in range(UNITS)] + [(MARK_PID, MARK_DIM, MARK_VALUE)]
    rows.append((MARK_PID + 1, MARK_QUARANTINED, -5.0))
    data = tmp_path / "in"
    spark.createDataFrame(rows, "pid long, g string, v double").write.parquet(str(data))
    doc = {
        "input": {
            "path": str(data),
            "privacy_unit": "pid",
            "on_invalid": "quarantine",
            "expectations": [{"column": "v", "between": [0, 10**6]}],
        },
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "output": {"path": str(tmp_path / "out")},
        "tables": [
            {
                "name": "by_g",
                "dimensions": ["g"],
                "partitions": {"type": "private"},
                "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
                "metrics": ["privacy_unit_count", {"mean": "v", "lower": 0, "upper": 10}],
            }
        ],
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    exe = shutil.which("dprelease", path=str(Path(sys.executable).parent))
    assert exe
    env = _env() | extra_env
    cmd = [exe, "-v", "run", str(spec), "--release-id", "canary", "--master", "local[1]"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    release = tmp_path / "out" / "canary"
    manifest = (release / "manifest.json").read_text()
    assert json.loads(manifest)["tables"][0]["released_cells"] == 1  # only the common cell
    quarantined = pd.read_parquet(tmp_path / "out" / ".private" / "quarantine" / "canary")
    assert list(quarantined["g"]) == [MARK_QUARANTINED]  # control: the row was read and set aside
    assert "DEBUG" in done.stderr  # the canary ran with debug logging on
    texts = {
        "stdout": done.stdout,
        "stderr": done.stderr,
        "manifest": manifest,
        "released": pd.read_parquet(release / "by_g").to_csv(),
        "report": (tmp_path / "out" / ".private" / "canary.json").read_text(),
    }
    return {where: without_temp_paths(text, tmp_path) for where, text in texts.items()}


def _leaks(everything: dict[str, str]) -> list[tuple[str, str]]:
    """(what, where) for every marker and exact count found."""
    found = []
    for where, text in everything.items():
        for marker in (MARK_DIM, str(MARK_PID), str(MARK_PID + 1), MARK_QUARANTINED):
            if marker in text:
                found.append((marker, where))
        if MARK_VALUE_RE.search(text):
            found.append(("value", where))
        if where in ("report", "released"):  # a noisy count may equal the exact one by chance
            continue
        for count in (UNITS, UNITS + 1, UNITS + 2):  # units in the cell; valid rows; all rows
            if _spark_count(count).search(text):
                found.append((str(count), where))
    return found


@pytest.mark.integration
@pytest.mark.parametrize("level", spark_logs.LEVELS)
def test_a_release_at_every_log_level_leaks_no_marker_and_no_exact_count(
    spark: Any, tmp_path: Path, level: str
) -> None:
    everything = _canary(spark, tmp_path, {"DPRELEASE_SPARK_LOG_LEVEL": level})
    assert _leaks(everything) == []


@pytest.mark.integration
def test_control_spark_at_trace_without_the_holds_prints_an_exact_count(
    spark: Any, tmp_path: Path
) -> None:
    """Control: with the show-errors switch Spark's loggers are not held, and at TRACE the
    record and statistics loggers print values or exact counts: the canary sees them."""
    env = {"DPRELEASE_SPARK_LOG_LEVEL": "TRACE", "DPRELEASE_SHOW_ERRORS": "1"}
    leaks = _leaks(_canary(spark, tmp_path, env))
    assert any(where == "stderr" for _, where in leaks), leaks


def test_errors_on_bad_rows_name_no_value(tmp_path: Path, spark: Any, capsys: Any) -> None:
    from jobs.cli import main

    rows = [(1, "a", 1.0), (MARK_PID, MARK_DIM, float("nan"))]
    data = tmp_path / "in"
    spark.createDataFrame(rows, "pid long, g string, v double").write.parquet(str(data))
    doc = {
        "input": {"path": str(data), "privacy_unit": "pid"},
        "budget": {"epsilon": 1.0},
        "output": {"path": str(tmp_path / "out")},
        "tables": [
            {
                "name": "t",
                "dimensions": ["g"],
                "partitions": {"type": "public", "keys": [["a"]]},
                "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
                "metrics": [{"sum": "v", "lower": 0, "upper": 1}],
            }
        ],
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["-v", "run", str(spec)]) == 3
    captured = capsys.readouterr()
    for marker in (MARK_DIM, str(MARK_PID)):
        assert marker not in captured.err and marker not in captured.out
