"""Spark Connect: a local Connect server started from the pip-installed pyspark (its
``SparkConnectServer`` class through ``spark-submit``), stopped by process id at the end.

The demo release runs through it from the console command (``--remote`` and ``SPARK_REMOTE``),
from ``spark-submit --remote`` and from the Python API. The console command and the API, run in
client processes of their own, start no JVM there. The API's tables are the ones a classic
session releases with the same noise keys, and every manifest is the classic one but for its ids
and times. Needs pyspark 4 and the Connect client (``pip install 'dprelease[connect]'``);
skipped on the Spark 3.5 environment.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs.cli import main
from tests.conftest import ROOT
from tests.test_cluster import BIN, free_port, wait_for
from tests.test_jobs import DEMO, _env

pyspark = pytest.importorskip("pyspark")
if int(pyspark.__version__.split(".")[0]) < 4:
    pytest.skip("Spark Connect releases need pyspark 4", allow_module_level=True)
pytest.importorskip("grpc", reason="the Spark Connect client: pip install 'dprelease[connect]'")

pytestmark = pytest.mark.connect
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server on 127.0.0.1 (local[2]); yields its sc:// URL."""
    where = tmp_path_factory.mktemp("connect-server")
    port = free_port()
    log = where / "server.log"
    cmd = [
        str(BIN / "spark-submit"),
        *("--class", SERVER_CLASS, "--master", "local[2]"),
        *("--conf", f"spark.connect.grpc.binding.port={port}"),
        *("--conf", "spark.connect.grpc.binding.address=127.0.0.1"),
        *("--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=2"),
        *("--conf", f"spark.pyspark.python={sys.executable}"),
        "spark-internal",
    ]
    with log.open("wb") as fh:
        server = subprocess.Popen(cmd, env=_env(), stdout=fh, stderr=subprocess.STDOUT, cwd=where)
    try:
        wait_for(log, "Spark Connect server started", server)
        yield f"sc://127.0.0.1:{port}"
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
        assert server.poll() is not None


def _client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args),
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without what differs between any two runs: ids, times, and the cells a
    private selection kept (drawn afresh)."""
    drop = {"release_id", "created_utc", "input_fingerprint"}
    kept = {k: v for k, v in manifest.items() if k not in drop}
    kept["tables"] = [
        {k: v for k, v in t.items() if k != "released_cells"} for t in manifest["tables"]
    ]
    return kept


@pytest.mark.integration
def test_the_console_command_releases_the_demo_through_spark_connect(
    connect_url: str, demo_path: str, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "out"
    run = [str(DEMO), "--input", demo_path, "--output", str(out)]
    exe = str(BIN / "dprelease")
    via_flag = _client(exe, "run", *run, "--release-id", "remote", "--remote", connect_url)
    assert "release remote written to" in via_flag.stdout
    env = {**_env(), "SPARK_REMOTE": connect_url}
    client = [sys.executable, "-m", "tests.connect_client", "cli"]
    _client(*client, "run", *run, "--release-id", "env", env=env)  # and no JVM in the client
    submit = [str(BIN / "spark-submit"), "--remote", connect_url, str(ROOT / "jobs" / "release.py")]
    _client(*submit, "--config", *run, "--release-id", "submit")
    assert main(["run", *run, "--release-id", "classic"]) == 0  # this process's classic session
    capsys.readouterr()
    classic = json.loads((out / "classic" / "manifest.json").read_text())
    for rid in ("remote", "env", "submit"):
        manifest = json.loads((out / rid / "manifest.json").read_text())
        assert _comparable(manifest) == _comparable(classic)
        for table in manifest["tables"]:
            released = pd.read_parquet(out / rid / table["path"])
            assert len(released) == table["released_cells"] > 0
            assert list(released.columns) == list(
                pd.read_parquet(out / "classic" / table["path"]).columns
            )
        state = pd.read_parquet(out / rid / "persons_by_state_age_sex")
        assert len(state) == 20 * 7 * 2  # every public cell


def test_the_python_api_on_spark_connect_releases_the_classic_tables(
    connect_url: str, demo_path: str
) -> None:
    """Same spec, same data, same (test-only) noise keys: the same released rows, bit for bit,
    and the same privacy report; the Connect client never starts a JVM."""
    remote = _client(
        sys.executable, "-m", "tests.connect_client", "release", connect_url, str(DEMO), demo_path
    )
    classic = _client(
        sys.executable, "-m", "tests.connect_client", "release", "local[2]", str(DEMO), demo_path
    )
    got, want = json.loads(remote.stdout), json.loads(classic.stdout)
    assert set(got["tables"]) == {"persons_by_state_age_sex", "persons_by_county"}
    assert all(got["tables"].values())
    assert got == want


def test_a_job_alongside_is_cancelled_by_its_session_tag_on_spark_connect(
    connect_url: str,
) -> None:
    done = _client(sys.executable, "-m", "tests.connect_client", "cancel", connect_url)
    assert "cancelled" in done.stdout


def test_chosen_bounds_and_modes_release_the_same_on_spark_connect(
    connect_url: str, demo_path: str, tmp_path: Path
) -> None:
    """Bounds the release chooses (L0 and an upper clamp) and the exponential mechanism's modes
    and top-k, through the Python API on Connect and on a classic session: the same rows."""
    import yaml

    from pipelines.demo_data import AGE_GROUPS, RACES

    doc = yaml.safe_load(DEMO.read_text())
    doc["tables"] = [
        {
            "name": "race_by_state",
            "dimensions": ["state"],
            "partitions": {"type": "public", "keys": "cross_product"},
            "bounds": {"max_partitions": "auto", "max_rows_per_partition": 1},
            "metrics": [
                "count",
                {"mode": "race", "categories": list(RACES)},
                {"top_k": "age_group", "k": 2, "categories": list(AGE_GROUPS)},
                {"mean": "income", "lower": 0, "upper": "auto"},
            ],
        }
    ]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    client = [sys.executable, "-m", "tests.connect_client", "release"]
    remote = _client(*client, connect_url, str(spec), demo_path)
    classic = _client(*client, "local[2]", str(spec), demo_path)
    got, want = json.loads(remote.stdout), json.loads(classic.stdout)
    assert len(got["tables"]["race_by_state"]) == 20
    assert got == want
    (table,) = got["privacy"]["tables"]
    assert table["chosen_bounds"]["max_partitions"] >= 1


@pytest.mark.integration
def test_a_series_runs_its_months_through_connect_spark_submit_and_a_classic_session(
    connect_url: str, spark: Any, tmp_path: Path, capsys: Any
) -> None:
    """One series, three months, each through another path: the console command on Connect,
    spark-submit on Connect, this process's classic session. One tree, one ledger account."""
    from fractions import Fraction

    from jobs.ledger import Budget, Ledger
    from tests.test_series import demo_series

    months = ["2027-01", "2027-02", "2027-03"]
    spec, _ = demo_series(spark, tmp_path, months)
    Ledger(tmp_path / "ledger.sqlite").init(
        "registrations", Budget(Fraction(0), Fraction(0), Fraction(2))
    )
    exe = str(BIN / "dprelease")
    _client(exe, "run", str(spec), "--period", months[0], "--remote", connect_url)
    submit = [str(BIN / "spark-submit"), "--remote", connect_url, str(ROOT / "jobs" / "release.py")]
    _client(*submit, "--config", str(spec), "--period", months[1])
    assert main(["run", str(spec), "--period", months[2]]) == 0
    capsys.readouterr()
    account = Ledger(tmp_path / "ledger.sqlite").account("registrations")
    assert account.spent.rho == Fraction(1)
    assert sorted(r[0] for r in account.releases) == sorted(
        ["series:registrations", *(f"registrations-{m}" for m in months)]
    )
    tables = []
    for position, month in enumerate(months, start=1):
        release = tmp_path / "out" / f"registrations-{month}"
        manifest = json.loads((release / "manifest.json").read_text())
        assert manifest["series"]["position"] == position
        table = pd.read_parquet(release / "registrations_by_state_sex")
        assert len(table) == 40 and "count_to_date" in table.columns
        tables.append(table.set_index(["state", "sex"]).sort_index())
    assert (tables[0]["count"] == tables[0]["count_to_date"]).all()  # month 1: one leaf
    # each month's cohort is new: the totals to date grow by about a month's count
    for before, after in itertools.pairwise(tables):
        assert after["count_to_date"].sum() > before["count_to_date"].sum()
