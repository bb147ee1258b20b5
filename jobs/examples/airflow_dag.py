"""Airflow DAG example: one differentially private release per month, through spark-submit.

Copy this file into Airflow's dags folder. The Airflow workers need the Apache Spark provider
(``apache-airflow-providers-apache-spark``) and a ``spark-submit`` on the PATH; the Spark
connection ``spark_default`` names the master (``yarn``, ``spark://host:7077``, ``k8s://...``).
Where dprelease lives is set by environment variables (defaults in brackets):

* ``DPRELEASE_HOME``: the project checkout with its ``.venv`` [/opt/dprelease];
* ``DPRELEASE_SPEC``: the release spec [$DPRELEASE_HOME/conf/demo.yaml];
* ``DPRELEASE_PYFILES``: the code zip from ``dprelease package``
  [$DPRELEASE_HOME/dist/dprelease-pyfiles.zip];
* ``DPRELEASE_PYTHON``: the Python of driver and executors [$DPRELEASE_HOME/.venv/bin/python].

The release id is the run's logical date (``{{ ds }}``), not the time of the attempt: a retried
task finds its release already written, or charged in the ledger, and never spends the budget
twice. Exit codes of ``jobs/release.py`` (0 released or already released, 2 spec error,
3 invalid input, 4 budget refused, 5 runtime failure) fail the task on anything but 0; only 5 is
worth a retry, and retrying the others is harmless.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

HOME = os.environ.get("DPRELEASE_HOME", "/opt/dprelease")
SPEC = os.environ.get("DPRELEASE_SPEC", f"{HOME}/conf/demo.yaml")
PYFILES = os.environ.get("DPRELEASE_PYFILES", f"{HOME}/dist/dprelease-pyfiles.zip")
PYTHON = os.environ.get("DPRELEASE_PYTHON", f"{HOME}/.venv/bin/python")

with DAG(
    dag_id="dprelease_monthly",
    schedule="@monthly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # releases of one dataset run one at a time (the ledger enforces it too)
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["dprelease"],
) as dag:
    SparkSubmitOperator(
        task_id="release",
        conn_id="spark_default",
        application=f"{HOME}/jobs/release.py",
        py_files=PYFILES,
        name="dprelease-{{ ds }}",
        conf={
            "spark.pyspark.python": PYTHON,
            "spark.pyspark.driver.python": PYTHON,
            "spark.ui.showConsoleProgress": "false",
        },
        application_args=["--config", SPEC, "--release-id", "{{ ds }}"],
    )
