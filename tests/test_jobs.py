"""The demo job end to end: console command, spark-submit, manifest, idempotence, crash safety."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from jobs import runner, writer
from jobs.api import release_dataframes
from jobs.cli import _import_in_background, main
from jobs.config import load_spec
from jobs.session import load_profile, local_cores, session_conf
from pipelines.validation import load_great_expectations
from tests.conftest import ROOT

DEMO = ROOT / "conf" / "demo.yaml"


def test_demo_release_writes_tables_and_a_manifest_that_matches_the_spec(
    demo_path: str, tmp_path: Path, spark: Any, capsys: Any
) -> None:
    out = tmp_path / "out"
    args = ["run", str(DEMO), "--input", demo_path, "--output", str(out), "--release-id", "demo-a"]
    assert main(args) == 0
    assert "release demo-a written to" in capsys.readouterr().out
    release = out / "demo-a"
    manifest = json.loads((release / "manifest.json").read_text())
    spec = load_spec(DEMO, input_path=demo_path, output_path=str(out))
    assert manifest["budget"]["declared"] == {"epsilon": 1.0, "delta": 1e-6, "rho": None}
    assert manifest["budget"]["spent"]["epsilon"] == pytest.approx(1.0)
    assert manifest["budget"]["spent"]["delta"] <= 1e-6
    assert {"dprelease", "spark", "python"} <= set(manifest["versions"])
    assert len(manifest["spec_sha256"]) == 64 and len(manifest["input_fingerprint"]["value"]) == 64
    by_name = {t["name"]: t for t in manifest["tables"]}
    state = by_name["persons_by_state_age_sex"]
    assert state["released_cells"] == 20 * 7 * 2  # every public cell, present in the data or not
    eps_state = Fraction(2, 3)  # weight 2 of 3
    assert state["budget"]["epsilon"] == pytest.approx(float(eps_state))
    units = next(m for m in state["metrics"] if m["name"] == "privacy_unit_count")
    if (
        units["mechanism"] == "discrete_laplace"
    ):  # L0 = 2, three measurements share the table's epsilon
        assert units["noise_parameter"]["value"] == pytest.approx(
            2 / float(eps_state / 3), rel=1e-6
        )
        assert units["sensitivity"] == {"per_partition": 1, "max_partitions": 2}
    county = by_name["persons_by_county"]
    assert county["partitions"]["type"] == "private" and county["partitions"]["threshold"] > 1
    tables = {t.name: spark.read.parquet(str(release / t.name)) for t in spec.tables}
    assert tables["persons_by_state_age_sex"].columns == [
        "state",
        "age_group",
        "sex",
        "privacy_unit_count",
        "count",
        "mean_income",
    ]
    assert tables["persons_by_state_age_sex"].count() == state["released_cells"]
    assert tables["persons_by_county"].count() == county["released_cells"]
    # the same release id again: nothing is recomputed, nothing spent, nothing rewritten
    before = (release / "manifest.json").stat().st_mtime_ns
    assert main(args) == 0
    assert "already exists" in capsys.readouterr().out
    assert (release / "manifest.json").stat().st_mtime_ns == before
    private = out / ".private"
    assert oct(private.stat().st_mode & 0o777) == "0o700"


def test_a_crash_before_the_commit_leaves_nothing_visible_and_keeps_the_charge(
    demo_path: str, tmp_path: Path, spark: Any, monkeypatch: Any
) -> None:
    import dataclasses
    from fractions import Fraction

    from jobs.ledger import Budget, Ledger
    from pipelines.spec import LedgerSpec

    spec = load_spec(DEMO, input_path=demo_path, output_path=str(tmp_path / "out"))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.init("demo", Budget(Fraction(5), Fraction(1, 10**5)))
    spec = dataclasses.replace(spec, ledger=LedgerSpec("demo", str(ledger.path)))

    def boom(*_: Any) -> None:
        raise RuntimeError("simulated crash while writing the manifest")

    monkeypatch.setattr(writer, "write_manifest", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.run_release(spark, spec, "crashy")
    assert not (tmp_path / "out" / "crashy").exists()  # the failed attempt removed its tables
    assert [r for r, _, _ in ledger.account("demo").releases] == ["crashy"]  # conservative
    monkeypatch.undo()
    outcome = runner.run_release(spark, spec, "crashy")  # a rerun completes ...
    assert (Path(outcome.path) / "manifest.json").exists()
    account = ledger.account("demo")
    assert len(account.releases) == 1 and account.spent.epsilon == Fraction(1)  # ... uncharged


def test_a_rho_release_is_charged_its_rho_and_reports_both_guarantees(
    demo_path: str, tmp_path: Path, capsys: Any
) -> None:
    from dp_ops import accounting
    from jobs.ledger import Ledger

    ledger = str(tmp_path / "ledger.sqlite")
    assert main(["budget", "init", "demo-zcdp", "--rho", "0.2", "--ledger", ledger]) == 0
    run = ["run", str(ROOT / "conf" / "demo_zcdp.yaml"), "--input", demo_path]
    run += ["--output", str(tmp_path / "out"), "--ledger", ledger, "--release-id"]
    assert main([*run, "z1"]) == 0
    manifest = json.loads((tmp_path / "out" / "z1" / "manifest.json").read_text())
    spent = manifest["budget"]["spent"]
    assert manifest["budget"]["declared"] == {"epsilon": None, "delta": 1e-6, "rho": 0.125}
    assert spent["rho"] == pytest.approx(0.125, rel=1e-12)  # Gaussian noise spends all of rho
    assert spent["epsilon"] == pytest.approx(accounting.zcdp_epsilon(spent["rho"], 1e-6))
    for table in manifest["tables"]:
        assert table["budget"]["zcdp_rho"] == pytest.approx(table["budget"]["rho"], rel=1e-12)
    charged = Ledger(ledger).account("demo-zcdp").spent
    assert charged.epsilon == 0 and charged.rho == Fraction(1, 8)  # exact, in rho
    assert main([*run, "z2"]) == 4  # 0.2 - 0.125 left: a second release is refused before work
    assert "requests rho 0.125; remaining rho 0.075" in capsys.readouterr().err
    assert not (tmp_path / "out" / "z2").exists()


def test_python_api_returns_lazy_tables_with_stable_noise(demo_path: str, spark: Any) -> None:
    spec = load_spec(DEMO, input_path=demo_path, output_path="unused")
    result = release_dataframes(spec, spark)
    table = result.tables["persons_by_state_age_sex"]
    first = sorted(tuple(r) for r in table.collect())  # safe: released table
    assert first == sorted(tuple(r) for r in table.collect())
    assert result.privacy["spent"]["epsilon"] == pytest.approx(1.0)


def test_python_api_charges_the_ledger_and_refuses_a_second_draw(
    demo_path: str, spark: Any, tmp_path: Path
) -> None:
    from dataclasses import replace

    from dp_ops.errors import BudgetError
    from jobs.ledger import Budget, Ledger
    from pipelines.spec import LedgerSpec

    path = tmp_path / "ledger.sqlite"
    Ledger(path).init("demo", Budget(Fraction(5, 2), Fraction(1, 10**5)))
    spec = load_spec(DEMO, input_path=demo_path, output_path="unused")
    spec = replace(spec, ledger=LedgerSpec(dataset="demo", path="elsewhere.sqlite"))
    first = release_dataframes(spec, spark, release_id="nb-1", ledger=path)
    assert first.release_id == "nb-1"
    assert Ledger(path).account("demo").spent.epsilon == pytest.approx(1.0)
    with pytest.raises(BudgetError, match="'nb-1' is already charged"):
        release_dataframes(spec, spark, release_id="nb-1", ledger=path)
    second = release_dataframes(spec, spark, ledger=path)  # a new id by default
    assert second.release_id not in (None, "nb-1")
    with pytest.raises(BudgetError, match="remaining"):  # 0.5 left: refused before the data
        release_dataframes(spec, spark, input_df=None, release_id="nb-3", ledger=path)
    assert len(Ledger(path).account("demo").releases) == 2
    assert not Path("elsewhere.sqlite").exists()
    with pytest.raises(BudgetError, match="no ledger section"):
        release_dataframes(replace(spec, ledger=None), spark, ledger=path)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["PYSPARK_PYTHON"] = sys.executable
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return env


def _demo_run(demo_path: str, out: Path, release_id: str) -> list[str]:
    return [str(DEMO), "--input", demo_path, "--output", str(out), "--release-id", release_id]


def _run_ok(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.integration
def test_console_command_runs_the_demo(demo_path: str, tmp_path: Path) -> None:
    exe = shutil.which("dprelease", path=str(Path(sys.executable).parent))
    assert exe, "the dprelease console script is installed with the project"
    profile = str(ROOT / "conf" / "spark" / "local.yaml")
    run = [exe, "run", *_demo_run(demo_path, tmp_path, "cli")]
    done = _run_ok([*run, "--master", "local[2]", "--spark-profile", profile])
    assert (tmp_path / "cli" / "manifest.json").exists()
    assert "stage table persons_by_county" in done.stderr  # progress with elapsed times


@pytest.mark.integration
def test_spark_submit_runs_the_demo(demo_path: str, tmp_path: Path) -> None:
    submit = str(Path(sys.executable).parent / "spark-submit")
    confs = ["--conf", "spark.ui.enabled=false", "--conf", f"spark.pyspark.python={sys.executable}"]
    script = str(ROOT / "jobs" / "release.py")
    config = _demo_run(demo_path, tmp_path, "submitted")
    _run_ok([submit, "--master", "local[2]", *confs, script, "--config", *config], cwd=tmp_path)
    manifest = json.loads((tmp_path / "submitted" / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tables"]] == [
        "persons_by_state_age_sex",
        "persons_by_county",
    ]


def test_package_zips_the_three_packages(tmp_path: Path, capsys: Any) -> None:
    import zipfile

    target = tmp_path / "py.zip"
    assert main(["package", "--output", str(target)]) == 0
    names = set(zipfile.ZipFile(target).namelist())
    assert {"dp_ops/samplers.py", "pipelines/release.py", "jobs/cli.py"} <= names
    assert not any(n.startswith("tests/") for n in names)


def test_csv_input_keys_file_and_csv_output(tmp_path: Path, spark: Any, capsys: Any) -> None:
    import yaml

    data = tmp_path / "in.csv"
    data.write_text("pid,g,v\n1,a,2.5\n2,a,3.0\n3,b,1.0\n4,zz,9.0\n")
    keys = tmp_path / "keys.csv"
    keys.write_text("g\na\nb\nc\n")
    doc = {
        "input": {"path": str(data), "format": "csv", "privacy_unit": "pid"},
        "budget": {"epsilon": 1.0},
        "output": {"path": str(tmp_path / "out"), "format": "csv"},
        "tables": [
            {
                "name": "by_g",
                "dimensions": ["g"],
                "partitions": {"type": "public", "path": str(keys), "format": "csv"},
                "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
                "metrics": ["count", {"sum": "v", "lower": 0, "upper": 5}],
            }
        ],
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["run", str(spec), "--release-id", "csv1"]) == 0, capsys.readouterr().err
    out = spark.read.option("header", "true").csv(str(tmp_path / "out" / "csv1" / "by_g"))
    assert sorted(r["g"] for r in out.collect()) == ["a", "b", "c"]  # safe: released table
    assert out.columns == ["g", "count", "sum_v"]
    manifest = json.loads((tmp_path / "out" / "csv1" / "manifest.json").read_text())
    assert manifest["tables"][0]["format"] == "csv" and manifest["tables"][0]["released_cells"] == 3


def test_the_input_fingerprint_depends_on_the_key_and_the_files(
    demo_path: str, tmp_path: Path, spark: Any
) -> None:
    from jobs.io import input_fingerprint

    df = spark.read.parquet(demo_path)
    a, b = b"\x01" * 32, b"\x02" * 32
    assert input_fingerprint(df, a) == input_fingerprint(spark.read.parquet(demo_path), a)
    assert input_fingerprint(df, a) != input_fingerprint(df, b)  # no key: no guess can be tested
    copy = tmp_path / "copy"
    df.limit(10).write.parquet(str(copy))
    assert input_fingerprint(spark.read.parquet(str(copy)), a) != input_fingerprint(df, a)


@pytest.mark.parametrize(
    ("master", "cores"),
    [
        ("local", 1),
        ("local[3]", 3),
        ("local[4,2]", 4),
        ("local[*]", os.cpu_count()),
        ("spark://host:7077", None),
        ("yarn", None),
    ],
)
def test_local_masters_are_told_apart(master: str, cores: int | None) -> None:
    assert local_cores(master) == cores


def test_local_sessions_get_few_shuffle_partitions_unless_the_profile_says() -> None:
    key = "spark.sql.shuffle.partitions"
    assert session_conf("local[2]", {})[key] == "4"
    assert key not in session_conf("spark://host:7077", {})  # the cluster's own default stands
    assert key not in session_conf(None, {})  # spark-submit's master: not ours to guess
    profile = load_profile(ROOT / "conf" / "spark" / "local.yaml")
    assert session_conf("local[2]", profile)[key] == profile[key] == "8"


def test_a_failing_background_import_is_left_to_the_import_that_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uncaught: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_value))
    ran: list[str] = []

    def failing() -> None:
        ran.append("failing")
        raise ImportError("no such module")

    for load in (failing, lambda: ran.append("fine")):
        _import_in_background(load).join(timeout=10)
    assert ran == ["failing", "fine"]
    assert uncaught == []  # no traceback on the console from the thread


def test_the_background_import_loads_great_expectations_quietly() -> None:
    logging.getLogger("great_expectations").setLevel(logging.DEBUG)  # as if GX or a caller set it
    load_great_expectations()
    assert "great_expectations.expectations" in sys.modules
    assert logging.getLogger("great_expectations").getEffectiveLevel() == logging.WARNING
