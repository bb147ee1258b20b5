"""Input validation: great-expectations verdicts, the same rules as Spark predicates, quarantine."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from chispa import assert_df_equality

from dp_ops.errors import InputDataError, SpecError
from jobs.cli import main
from pipelines import validation
from pipelines.spec import parse_spec
from tests.conftest import base_spec, without_temp_paths

MARKER = "QZV_QUARANTINED_MARKER"
SCHEMA = "pid long, g string, v double, age long"
CLEAN = [(1, "a", 1.0, 30), (2, "b", 2.5, 40), (3, "c", 7.0, 50), (4, "a", 0.5, 60)]
# one row per rule it breaks, and the rule's name
BAD = [
    ((None, "a", 1.0, 30), "pid not null (privacy unit)"),
    ((5, None, 1.0, 30), "g not null (dimension)"),
    ((6, MARKER, 1.0, 30), "g in its declared domain"),
    ((7, "b", math.nan, 30), "v finite (no NaN or infinity)"),
    ((8, "b", -math.inf, 30), "v finite (no NaN or infinity)"),
    ((9, "c", None, 30), "v not null (value)"),
    ((10, "c", 1.0, 130), "age between 0.0 and 115.0 (input.expectations[0])"),
]


def spec_doc(on_invalid: str = "fail", validator: str | None = None) -> dict[str, Any]:
    doc = base_spec()
    doc["input"]["on_invalid"] = on_invalid
    if validator is not None:
        doc["input"]["validator"] = validator
    doc["input"]["expectations"] = [{"column": "age", "between": [0, 115]}]
    return doc


def test_each_rule_fails_in_great_expectations_and_in_spark_alike(spark: Any) -> None:
    """Both validators give the same verdict, rule by rule, and the predicates that split the
    rows agree with it."""
    spec = parse_spec(spec_doc())
    clean = spark.createDataFrame(CLEAN, SCHEMA)
    rules = validation.input_rules(spec, clean.schema)
    assert all(validation.gx_verdict(clean, rules).values())  # control: clean data passes
    assert validation.spark_verdict(clean, rules) == validation.gx_verdict(clean, rules)
    for row, name in BAD:
        df = spark.createDataFrame([*CLEAN, row], SCHEMA)
        verdict = validation.gx_verdict(df, rules)
        assert [n for n, ok in verdict.items() if not ok] == [name], row
        assert validation.spark_verdict(df, rules) == verdict, row
        valid, invalid = validation.split_invalid(df, rules)
        assert valid.count() == len(CLEAN)
        failed = invalid.collect()
        assert len(failed) == 1 and failed[0][validation.FAILED_COLUMN] == [name]


def test_failing_rows_stop_the_release_by_default_naming_the_expectation(
    tmp_path: Path, spark: Any, capsys: Any
) -> None:
    code, out = _run(tmp_path, spark, spec_doc("fail"), [*CLEAN, BAD[2][0]])
    err = capsys.readouterr().err
    assert code == 3 and "'g in its declared domain'" in err and "on_invalid: quarantine" in err
    assert MARKER not in err
    assert not (out / "r1").exists() and not (out / ".private" / "quarantine").exists()


@pytest.mark.parametrize("validator", ["great_expectations", "spark"])
def test_quarantine_sets_invalid_rows_aside_and_loses_none(
    tmp_path: Path, spark: Any, capsys: Any, validator: str
) -> None:
    rows = [*CLEAN, *(r for r, _ in BAD)]
    doc = spec_doc("quarantine", validator)
    code, out = _run(tmp_path, spark, doc, rows, verbose=True)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    quarantine = out / ".private" / "quarantine" / "r1"
    kept = spark.read.parquet(str(quarantine))
    expected = spark.createDataFrame(
        [(*r, [n]) for r, n in BAD], f"{SCHEMA}, {validation.FAILED_COLUMN} array<string>"
    )
    assert_df_equality(
        kept, expected, ignore_row_order=True, ignore_nullable=True, allow_nan_equality=True
    )
    assert oct((out / ".private").stat().st_mode & 0o777) == "0o700"
    assert all(p.stat().st_mode & 0o077 == 0 for p in quarantine.rglob("*"))  # owner only
    report = json.loads((out / ".private" / "r1.json").read_text())
    failed = {e["expectation"] for e in report["validation"] if not e["passed"]}
    assert failed == {n for _, n in BAD} and report["quarantine"] == str(quarantine)
    manifest = (out / "r1" / "manifest.json").read_text()
    assert "age between 0.0 and 115.0" in manifest  # the suite is public ...
    assert "quarantine" in manifest and "rows_quarantined" not in manifest  # ... the verdict not
    released = "".join(p.read_bytes().hex() for p in (out / "r1").rglob("*.parquet"))
    for text in (captured.err, captured.out, manifest):
        # the bad age as a number of its own, not inside a hex digest that happens to hold it
        # nor in the name of pytest's temporary directory (pytest-130 after 130 runs)
        text = without_temp_paths(text, tmp_path)
        assert MARKER not in text and not re.search(r"(?<![\w.])130(?![\w.])", text)
    assert MARKER.encode().hex() not in released
    # the valid rows alone are released: a rerun is not charged and finds the release in place
    assert _run(tmp_path, spark, doc, rows)[0] == 0


def test_an_input_of_only_invalid_rows_is_refused(tmp_path: Path, spark: Any, capsys: Any) -> None:
    code, out = _run(tmp_path, spark, spec_doc("quarantine"), [BAD[0][0]])
    assert code == 3 and "no valid rows" in capsys.readouterr().err
    assert not (out / "r1").exists()


@pytest.mark.parametrize(
    ("expectation", "key", "message"),
    [
        ({"column": "age"}, "input.expectations[0]", "exactly one of"),
        ({"column": "age", "between": [3]}, "input.expectations[0].between", "[lower, upper]"),
        ({"column": "age", "between": [5, 1]}, "input.expectations[0].between", "must not exceed"),
        ({"column": "age", "in_set": []}, "input.expectations[0].in_set", "non-empty list"),
        ({"column": "age", "not_null": False}, "input.expectations[0].not_null", "must be true"),
        ({"column": "age", "unique": True}, "input.expectations[0].unique", "unknown key"),
    ],
)
def test_bad_expectations_are_spec_errors_naming_the_key(
    expectation: dict[str, Any], key: str, message: str
) -> None:
    doc = spec_doc()
    doc["input"]["expectations"] = [expectation]
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert str(err.value).startswith(key) and message in str(err.value)


def test_an_expectation_on_an_unsuitable_column_is_an_input_error(spark: Any) -> None:
    doc = spec_doc()
    doc["input"]["expectations"] = [{"column": "g", "between": [0, 1]}]
    df = spark.createDataFrame(CLEAN, SCHEMA)
    with pytest.raises(InputDataError, match="'between' needs a numeric column; 'g' is string"):
        validation.input_rules(parse_spec(doc), df.schema)
    doc["input"]["expectations"] = [{"column": "missing", "not_null": True}]
    with pytest.raises(InputDataError, match="column 'missing' is missing"):
        validation.input_rules(parse_spec(doc), df.schema)


def _run(
    tmp_path: Path, spark: Any, doc: dict[str, Any], rows: list[Any], verbose: bool = False
) -> tuple[int, Path]:
    data, out = tmp_path / "in", tmp_path / "out"
    spark.createDataFrame(rows, SCHEMA).write.mode("overwrite").parquet(str(data))
    doc["input"]["path"], doc["output"]["path"] = str(data), str(out)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    args = ["-v"] if verbose else []
    return main([*args, "run", str(spec), "--release-id", "r1"]), out


GX_GUARD = """
import sys
from jobs.cli import main

code = main(sys.argv[1:])
if "great_expectations" in sys.modules:
    sys.exit("great-expectations was imported")
sys.exit(code)
"""


@pytest.mark.integration
@pytest.mark.parametrize("validator", ["spark", "great_expectations"])
def test_the_spark_validator_never_imports_great_expectations(
    tmp_path: Path, spark: Any, validator: str
) -> None:
    """The console command imports great-expectations (seconds) only when it validates; the
    run with great-expectations is the control that the guard sees the import."""
    import subprocess
    import sys

    from tests.test_jobs import _env

    data = tmp_path / "in"
    spark.createDataFrame(CLEAN, SCHEMA).write.parquet(str(data))
    doc = spec_doc("fail", validator)
    doc["input"]["path"], doc["output"]["path"] = str(data), str(tmp_path / "out")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "guard.py").write_text(GX_GUARD)
    cmd = [sys.executable, str(tmp_path / "guard.py"), "run", str(tmp_path / "spec.yaml")]
    done = subprocess.run(
        [*cmd, "--release-id", "g", "--master", "local[1]"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if validator == "spark":
        assert done.returncode == 0, done.stderr[-2000:]
    else:
        assert "great-expectations was imported" in done.stderr
    assert (tmp_path / "out" / "g" / "manifest.json").exists()  # both released
