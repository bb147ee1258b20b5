"""Bad input: a clear error naming the key or column, a distinct exit code, no partial output."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.cli import main
from tests.conftest import base_spec

MARKER = "ZQX_SECRET_MARKER"
GOOD = [(1, "a", 1.0, MARKER), (2, "b", 2.5, MARKER), (3, "c", 7.0, MARKER)]
SCHEMA = "pid long, g string, v double, note string"


def run(
    tmp_path: Path,
    doc: dict[str, Any],
    spark: Any,
    rows: list[Any] | None = GOOD,
    schema: str = SCHEMA,
) -> tuple[int, str, Path]:
    data = tmp_path / "in"
    if rows is not None:
        spark.createDataFrame(rows, schema).write.mode("overwrite").parquet(str(data))
    doc = copy.deepcopy(doc)
    doc["input"]["path"] = str(data)
    out = tmp_path / "out"
    doc["output"]["path"] = str(out)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    return main(["run", str(spec), "--release-id", "r1"]), str(out), out


def check(capsys: Any, code: int, expected_code: int, match: str, out: Path) -> None:
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert match in err
    assert MARKER not in err and "7.0" not in err  # no data value in the message
    assert not (out / "r1").exists()  # nothing published, no attempt's directory left


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"budget": {"epsilon": 0}}, "budget.epsilon: must be > 0"),
        ({"budget": {"epsilon": 1, "delta": 1.5}}, "budget.delta: must lie in [0, 1)"),
        ({"metrics": ["median"]}, "tables[0].metrics[0]: must be one of"),
        (
            {"metrics": [{"sum": "v", "lower": 3, "upper": 1}]},
            "tables[0].metrics[0].lower: must be below upper",
        ),
    ],
)
def test_spec_errors_exit_2(
    tmp_path: Path, spark: Any, capsys: Any, change: dict[str, Any], match: str
) -> None:
    doc = base_spec()
    if "metrics" in change:
        doc["tables"][0].update(change)
    else:
        doc.update(change)
    code, _, out = run(tmp_path, doc, spark)
    check(capsys, code, 2, match, out)


@pytest.mark.parametrize(
    ("rows", "schema", "match"),
    [
        ([(1, "a", MARKER)], "pid long, g string, note string", "value column 'v' is missing"),
        ([(1, "a", MARKER)], "pid long, g string, v string", "value column 'v' must be numeric"),
        (
            [(None, "a", 7.0)],
            "pid long, g string, v double",
            "'pid not null (privacy unit)'",
        ),
        (
            [(1, "a", float("nan"))],
            "pid long, g string, v double",
            "'v finite (no NaN or infinity)'",
        ),
        (
            [(1, "a", float("inf"))],
            "pid long, g string, v double",
            "'v finite (no NaN or infinity)'",
        ),
        ([(1, None, 7.0)], "pid long, g string, v double", "'g not null (dimension)'"),
        ([], "pid long, g string, v double", "input: no rows"),
    ],
)
def test_input_errors_exit_3(
    tmp_path: Path, spark: Any, capsys: Any, rows: list[Any], schema: str, match: str
) -> None:
    code, _, out = run(tmp_path, base_spec(), spark, rows, schema)
    check(capsys, code, 3, match, out)


def test_missing_input_path_exits_3(tmp_path: Path, spark: Any, capsys: Any) -> None:
    code, _, out = run(tmp_path, base_spec(), spark, rows=None)
    check(capsys, code, 3, "does not exist", out)


def test_a_key_that_does_not_fit_the_input_type_is_a_spec_error(
    tmp_path: Path, spark: Any, capsys: Any
) -> None:
    doc = base_spec(domains={"g": [1, 2]})
    code, _, out = run(tmp_path, doc, spark, [(1, 2, 1.0)], "pid long, g long, v double")
    assert code == 0  # integer keys for an integer column are fine
    doc = base_spec(domains={"g": ["x"]})
    code, _, out = run(tmp_path / "b", doc, spark, [(1, 5, 1.0)], "pid long, g long, v double")
    check(capsys, code, 2, "domains.g: 'x' is not a valid bigint key", out)
