"""The Airflow DAG example: the exact spark-submit command line it builds runs the release."""

from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from jobs.cli import main
from tests.conftest import ROOT
from tests.test_jobs import DEMO, _run_ok

DAG_FILE = ROOT / "jobs" / "examples" / "airflow_dag.py"


class _Recorder:
    """Stands in for Airflow's DAG and SparkSubmitOperator: records what the DAG file builds."""

    operators: ClassVar[list[dict[str, Any]]] = []
    dags: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if "task_id" in kwargs:
            _Recorder.operators.append(kwargs)
        else:
            _Recorder.dags.append(kwargs)

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *_: Any) -> None:
        return None


def load_dag(
    monkeypatch: Any, env: dict[str, str], dag_file: Path = DAG_FILE
) -> list[dict[str, Any]]:
    _Recorder.operators, _Recorder.dags = [], []
    airflow = types.ModuleType("airflow")
    airflow.DAG = _Recorder  # type: ignore[attr-defined]
    operator_module = types.ModuleType("airflow.providers.apache.spark.operators.spark_submit")
    operator_module.SparkSubmitOperator = _Recorder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow", airflow)
    monkeypatch.setitem(sys.modules, operator_module.__name__, operator_module)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    runpy.run_path(str(dag_file))
    return _Recorder.operators


def dag_env(tmp_path: Path, **spec: str) -> dict[str, str]:
    """The environment a DAG example reads: this checkout, the code packaged into
    ``tmp_path`` (so the command needs no project beside it), this Python, and ``spec``."""
    zipped = tmp_path / "dprelease-pyfiles.zip"
    assert main(["package", "--output", str(zipped)]) == 0
    return {
        "DPRELEASE_HOME": str(ROOT),
        "DPRELEASE_PYFILES": str(zipped),
        "DPRELEASE_PYTHON": sys.executable,
        **spec,
    }


def spark_submit_command(task: dict[str, Any], master: str, binary: str, ds: str) -> list[str]:
    """The command Airflow's SparkSubmitHook runs for these operator arguments (same order:
    master, --conf pairs, --py-files, --name, application, application arguments), with the
    ``{{ ds }}`` template rendered as Airflow does for the templated fields."""

    def render(value: str) -> str:
        return value.replace("{{ ds }}", ds).replace("{{ ds[:7] }}", ds[:7])

    cmd = [binary, "--master", master]
    for key, value in task["conf"].items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += ["--py-files", task["py_files"], "--name", render(task["name"])]
    return [*cmd, task["application"], *(render(a) for a in task["application_args"])]


@pytest.mark.integration
def test_the_dag_command_line_releases_once_and_a_retry_spends_nothing(
    demo_path: str, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    doc = yaml.safe_load(DEMO.read_text())
    doc["input"]["path"], doc["output"]["path"] = demo_path, str(tmp_path / "out")
    doc["ledger"] = {"dataset": "demo", "path": str(tmp_path / "ledger.sqlite")}
    spec = tmp_path / "release.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["budget", "init", "demo", "--epsilon", "1.5", "--delta", "1e-5",
                 "--ledger", str(tmp_path / "ledger.sqlite")]) == 0  # fmt: skip
    (task,) = load_dag(monkeypatch, dag_env(tmp_path, DPRELEASE_SPEC=str(spec)))
    assert task["conn_id"] == "spark_default" and "{{ ds }}" in task["application_args"]
    submit = str(Path(sys.executable).parent / "spark-submit")
    cmd = spark_submit_command(task, "local[2]", submit, ds="2026-11-01")
    _run_ok(cmd, cwd=tmp_path)  # a working directory without the project: the zip ships the code
    assert (tmp_path / "out" / "2026-11-01" / "manifest.json").exists()
    retry = _run_ok(cmd, cwd=tmp_path)  # Airflow retries the task: nothing is spent again
    assert "already exists" in retry.stdout + retry.stderr
    capsys.readouterr()
    assert main(["budget", "show", "demo", "--ledger", str(tmp_path / "ledger.sqlite")]) == 0
    assert "remaining: epsilon 0.5" in capsys.readouterr().out  # charged once: 1.5 - 1


@pytest.mark.integration
def test_the_series_dag_releases_its_months_in_order_and_a_retry_spends_nothing(
    spark: Any, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from tests.test_series import demo_series

    spec, doc = demo_series(spark, tmp_path, ["2027-01", "2027-02"])
    assert main(["budget", "init", "registrations", "--rho", "1.5",
                 "--ledger", str(tmp_path / "ledger.sqlite")]) == 0  # fmt: skip
    env = dag_env(tmp_path, DPRELEASE_SERIES_SPEC=str(spec))
    (task,) = load_dag(monkeypatch, env, ROOT / "jobs" / "examples" / "airflow_series_dag.py")
    (dag,) = _Recorder.dags
    assert dag["max_active_runs"] == 1 and dag["default_args"]["depends_on_past"]
    assert dag["start_date"].strftime("%Y-%m") == doc["series"]["start"]
    submit = str(Path(sys.executable).parent / "spark-submit")
    month = {ds: spark_submit_command(task, "local[2]", submit, ds) for ds in ("2027-01-01",
             "2027-02-01")}  # fmt: skip
    _run_ok(month["2027-01-01"], cwd=tmp_path)
    _run_ok(month["2027-02-01"], cwd=tmp_path)
    retry = _run_ok(month["2027-02-01"], cwd=tmp_path)  # Airflow retries: nothing drawn again
    assert "already exists" in retry.stdout + retry.stderr
    for m in ("2027-01", "2027-02"):
        assert (tmp_path / "out" / f"registrations-{m}" / "manifest.json").exists()
    capsys.readouterr()
    assert (
        main(["budget", "show", "registrations", "--ledger", str(tmp_path / "ledger.sqlite")]) == 0
    )
    assert "remaining: rho 0.5" in capsys.readouterr().out  # the series once: 1.5 - 1
