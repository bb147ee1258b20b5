"""Released tables registered in Spark's catalog (``output.catalog_database``, jobs.catalog):
external tables over the committed release, re-pointed by the next release; foreign tables and
missing databases refused before anything is charged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from jobs.cli import main
from tests.test_jobs import DEMO

DATABASE = "dprelease_released"


@pytest.fixture
def database(spark: Any) -> Iterator[str]:
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    yield DATABASE
    spark.sql(f"DROP DATABASE {DATABASE} CASCADE")


def _spec(tmp_path: Path, demo_path: str, database: str) -> str:
    doc = yaml.safe_load(DEMO.read_text())
    doc["input"]["path"] = demo_path
    doc["output"]["path"] = str(tmp_path / "out")
    doc["output"]["catalog_database"] = database
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _property(spark: Any, table: str) -> str:
    rows = spark.sql(f"SHOW TBLPROPERTIES {table}").collect()
    return {r[0]: r[1] for r in rows}["dprelease.release_id"]


def _sorted(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


def test_released_tables_are_registered_and_follow_the_newest_release(
    spark: Any, database: str, demo_path: str, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, demo_path, database)
    for rid in ("first", "second"):
        assert main(["run", spec, "--release-id", rid]) == 0
        manifest = json.loads((tmp_path / "out" / rid / "manifest.json").read_text())
        for t in manifest["tables"]:
            name = f"{database}.{t['name']}"
            assert _property(spark, name) == rid
            files = pq.read_table(tmp_path / "out" / rid / t["path"]).to_pylist()
            registered = [r.asDict() for r in spark.table(name).collect()]
            assert _sorted(registered) == _sorted(files)
    assert main(["run", spec, "--release-id", "second"]) == 0  # already released: unchanged
    assert _property(spark, f"{database}.persons_by_county") == "second"
    spark.sql(f"DROP TABLE {database}.persons_by_county")  # external: the files stay
    assert (tmp_path / "out" / "second" / "persons_by_county").is_dir()


def test_a_foreign_table_or_a_missing_database_is_refused_before_the_release(
    spark: Any, database: str, demo_path: str, tmp_path: Path, capsys: Any
) -> None:
    spark.sql(f"CREATE TABLE {database}.persons_by_county (x INT) USING parquet")
    spec = _spec(tmp_path, demo_path, database)
    assert main(["run", spec, "--release-id", "r"]) == 2
    assert "was not registered by dprelease" in capsys.readouterr().err
    assert not (tmp_path / "out" / "r").exists()
    assert spark.table(f"{database}.persons_by_county").columns == ["x"]  # untouched
    missing = _spec(tmp_path, demo_path, "no_such_database")
    assert main(["run", missing, "--release-id", "r"]) == 2
    assert "does not exist" in capsys.readouterr().err
