"""Input from a catalog table (``input.table: db.persons``) instead of files (``input.path``),
with Spark's built-in catalog: the same release as from the table's files, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from dp_ops.errors import InputDataError, SpecError
from jobs.cli import main
from pipelines import release as release_module
from pipelines.spec import parse_input
from tests.test_jobs import DEMO

DATABASE = "dprelease_catalog_test"


@pytest.fixture
def persons(spark: Any, demo_path: str) -> Any:
    """``dprelease_catalog_test.persons``: an external table over the demo's Parquet files."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    spark.sql(f"CREATE TABLE {DATABASE}.persons USING parquet LOCATION '{demo_path}'")
    yield f"{DATABASE}.persons"
    spark.sql(f"DROP DATABASE {DATABASE} CASCADE")


def _fixed_secrets() -> release_module.Secrets:  # a test's keys, never a release's
    return release_module.Secrets(key=bytes(range(32)), salt=(1, 2, 3, 4), cell_salt=(5, 6))


def _spec(tmp_path: Path, name: str, source: dict[str, Any]) -> Path:
    doc = yaml.safe_load(DEMO.read_text())
    doc["input"] = {k: v for k, v in doc["input"].items() if k not in ("path", "format")}
    doc["input"].update(source)
    doc["output"]["path"] = str(tmp_path / "out")
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(doc))
    return spec


def _rows(release: Path) -> dict[str, list[dict[str, Any]]]:
    manifest = json.loads((release / "manifest.json").read_text())
    tables = {}
    for t in manifest["tables"]:
        rows = pq.read_table(release / t["path"]).to_pylist()
        tables[t["name"]] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return tables


def test_a_release_from_a_catalog_table_equals_one_from_its_files(
    persons: str, demo_path: str, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    monkeypatch.setattr(release_module.Secrets, "new", classmethod(lambda cls: _fixed_secrets()))
    from_table = _spec(tmp_path, "table", {"table": persons})
    from_files = _spec(tmp_path, "files", {"path": demo_path, "format": "parquet"})
    assert main(["run", str(from_table), "--release-id", "from-table"]) == 0
    assert main(["run", str(from_files), "--release-id", "from-files"]) == 0
    capsys.readouterr()
    by_table, by_files = (
        _rows(tmp_path / "out" / "from-table"),
        _rows(tmp_path / "out" / "from-files"),
    )
    assert by_table and all(by_table.values())
    assert by_table == by_files  # the same cells and, under the same keys, the same noise
    # control: other keys give other values, so the equality above is not vacuous
    monkeypatch.setattr(
        release_module.Secrets,
        "new",
        classmethod(lambda cls: release_module.Secrets(bytes(32), (9, 9, 9, 9), (9, 9))),
    )
    assert main(["run", str(from_table), "--release-id", "other-keys"]) == 0
    assert _rows(tmp_path / "out" / "other-keys") != by_table


def test_a_missing_table_exits_3_naming_it(spark: Any, tmp_path: Path, capsys: Any) -> None:
    spec = _spec(tmp_path, "missing", {"table": "no_such_db.persons"})
    assert main(["run", str(spec), "--release-id", "r1"]) == InputDataError.exit_code
    err = capsys.readouterr().err
    assert "input.table: 'no_such_db.persons' does not exist in the session's catalog" in err
    assert not (tmp_path / "out" / "r1").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"path": "p", "table": "db.t"}, "give path (Parquet or CSV files) or table"),
        ({}, "give path (Parquet or CSV files) or table"),
        ({"table": "db.t; DROP TABLE x"}, "input.table: must be a table name"),
        ({"table": "a.b.c.d"}, "input.table: must be a table name"),
        ({"table": ""}, "input.table: must be a table name"),
        ({"table": "db.t", "format": "csv"}, "input.format: applies to input.path only"),
        ({"table": "db.t", "csv_header": False}, "input.csv_header: applies to input.path only"),
    ],
)
def test_the_input_names_files_or_a_table(source: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_input({"privacy_unit": "pid", **source})


def test_a_table_name_parses_with_up_to_three_parts() -> None:
    for name in ("persons", "db.persons", "spark_catalog.db.persons_2026"):
        spec = parse_input({"privacy_unit": "pid", "table": name})
        assert spec.table == name and spec.path is None
        assert spec.source == f"input.table {name!r}"
