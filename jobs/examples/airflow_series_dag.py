"""Airflow DAG example: a monthly release series (conf/series_monthly.yaml), one period per run.

Copy this file into Airflow's dags folder, with the same environment as ``airflow_dag.py``
(``DPRELEASE_HOME``, ``DPRELEASE_PYFILES``, ``DPRELEASE_PYTHON``; the Spark connection
``spark_default``) and ``DPRELEASE_SERIES_SPEC`` [$DPRELEASE_HOME/conf/series_monthly.yaml].

Each run releases the month of its logical date (``{{ ds[:7] }}``, e.g. 2027-03), from
``input.path`` with ``{period}`` replaced by that month. The series needs what Airflow's
settings here give it:

* months run in order and one at a time (``catchup=True``, ``max_active_runs=1``,
  ``depends_on_past=True``): a month whose previous one is not published is refused (exit 4);
* a retried run finds its month published, or its tree's nodes measured, and neither draws nor
  charges again; the ledger charged the whole series at its first month;
* the schedule ends with the series' horizon (``end_date``): a month outside it is refused
  (exit 2), and a new series needs a new name and its own budget.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

HOME = os.environ.get("DPRELEASE_HOME", "/opt/dprelease")
SPEC = os.environ.get("DPRELEASE_SERIES_SPEC", f"{HOME}/conf/series_monthly.yaml")
PYFILES = os.environ.get("DPRELEASE_PYFILES", f"{HOME}/dist/dprelease-pyfiles.zip")
PYTHON = os.environ.get("DPRELEASE_PYTHON", f"{HOME}/.venv/bin/python")

with DAG(
    dag_id="dprelease_registrations_series",
    schedule="@monthly",
    start_date=datetime(2027, 1, 1),  # series.start: 2027-01
    end_date=datetime(2028, 12, 31),  # series.horizon: 24 months
    catchup=True,
    max_active_runs=1,
    default_args={
        "depends_on_past": True,
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
    },
    tags=["dprelease", "series"],
) as dag:
    SparkSubmitOperator(
        task_id="release_month",
        conn_id="spark_default",
        application=f"{HOME}/jobs/release.py",
        py_files=PYFILES,
        name="dprelease-registrations-{{ ds[:7] }}",
        conf={
            "spark.pyspark.python": PYTHON,
            "spark.pyspark.driver.python": PYTHON,
            "spark.ui.showConsoleProgress": "false",
        },
        application_args=["--config", SPEC, "--period", "{{ ds[:7] }}"],
    )
